//! Products of the catalog.

use crate::error::DomainError;
use crate::money::{Currency, MAX_PRICE};
use crate::time::Timestamp;
use crate::validate;
use serde::{Deserialize, Serialize};

/// A product as clients send it (`POST /products`, `PUT /products/{sku}`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDraft {
    /// Stock keeping unit: the product's identity.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Longer text; may be empty.
    #[serde(default)]
    pub description: String,
    /// Unit price in minor units (cents).
    pub price: i64,
    /// Currency of `price`.
    pub currency: Currency,
    /// Catalog category, an identifier such as `shoes`.
    pub category: String,
    /// Whether the product is for sale.
    #[serde(default = "default_true")]
    pub active: bool,
}

fn default_true() -> bool {
    true
}

impl ProductDraft {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), DomainError> {
        validate::id("sku", &self.sku)?;
        validate::text("name", &self.name, validate::MAX_NAME_LEN, false)?;
        validate::text(
            "description",
            &self.description,
            validate::MAX_DESCRIPTION_LEN,
            true,
        )?;
        if !(0..=MAX_PRICE).contains(&self.price) {
            return Err(DomainError::invalid(
                "price",
                format!("must be between 0 and {MAX_PRICE} minor units"),
            ));
        }
        validate::id("category", &self.category)?;
        Ok(())
    }
}

/// A stored product.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stock keeping unit: the product's identity.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Longer text; may be empty.
    #[serde(default)]
    pub description: String,
    /// Unit price in minor units.
    pub price: i64,
    /// Currency of `price`.
    pub currency: Currency,
    /// Catalog category.
    pub category: String,
    /// Whether the product is for sale.
    pub active: bool,
    /// Grows by one on every change.
    pub version: u64,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Product {
    /// Builds a new product from a validated draft.
    pub fn create(draft: ProductDraft, now: Timestamp) -> Result<Product, DomainError> {
        draft.validate()?;
        Ok(Product {
            sku: draft.sku,
            name: draft.name,
            description: draft.description,
            price: draft.price,
            currency: draft.currency,
            category: draft.category,
            active: draft.active,
            version: 1,
            created_at: now,
            updated_at: now,
        })
    }

    /// Replaces every field from `draft` (the sku must match). Returns whether the price changed.
    pub fn replace(&mut self, draft: ProductDraft, now: Timestamp) -> Result<bool, DomainError> {
        draft.validate()?;
        if draft.sku != self.sku {
            return Err(DomainError::invalid(
                "sku",
                "must match the sku in the path",
            ));
        }
        let price_changed = draft.price != self.price || draft.currency != self.currency;
        self.name = draft.name;
        self.description = draft.description;
        self.price = draft.price;
        self.currency = draft.currency;
        self.category = draft.category;
        self.active = draft.active;
        self.version += 1;
        self.updated_at = now;
        Ok(price_changed)
    }

    /// Marks the product as not for sale. Returns false when it already was inactive.
    pub fn deactivate(&mut self, now: Timestamp) -> bool {
        if !self.active {
            return false;
        }
        self.active = false;
        self.version += 1;
        self.updated_at = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ProductDraft {
        ProductDraft {
            sku: "SKU-1".into(),
            name: "Mug".into(),
            description: String::new(),
            price: 1299,
            currency: Currency::new("EUR").unwrap(),
            category: "kitchen".into(),
            active: true,
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let mut d = draft();
        d.price = -1;
        assert!(
            matches!(d.validate(), Err(DomainError::Invalid { field, .. }) if field == "price")
        );
        let mut d = draft();
        d.name = "x".repeat(201);
        assert!(d.validate().is_err());
        let mut d = draft();
        d.sku = "a.b".into();
        assert!(d.validate().is_err());
    }

    #[test]
    fn replace_reports_price_change_and_bumps_version() {
        let mut p = Product::create(draft(), Timestamp(1)).unwrap();
        let mut d = draft();
        d.name = "Big mug".into();
        assert!(!p.replace(d.clone(), Timestamp(2)).unwrap());
        d.price = 1500;
        assert!(p.replace(d, Timestamp(3)).unwrap());
        assert_eq!(p.version, 3);
        assert!(p.deactivate(Timestamp(4)));
        assert!(!p.deactivate(Timestamp(5)));
        assert_eq!(p.version, 4);
    }
}
