//! `/products`: create, list, read, replace, deactivate. Each sku is one inventory actor;
//! lists come from the catalog query.

use super::{page_cursor, page_limit, present, valid_id};
use crate::error::AppError;
use crate::extract::{Json, Path, Query, RequestId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use cartwheel_bus::messages::{CatalogQuery, InventoryCommand, Page};
use cartwheel_domain::{Product, ProductDraft};
use serde::Deserialize;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/products", post(create).get(list))
        .route("/products/{sku}", get(read).put(replace).delete(deactivate))
}

/// `POST /products` → 201 product.
async fn create(
    State(state): State<AppState>,
    rid: RequestId,
    Json(draft): Json<ProductDraft>,
) -> Result<(StatusCode, Json<Product>), AppError> {
    // The node validates too; checking here keeps a bad sku off the bus entirely.
    draft.validate()?;
    let sku = draft.sku.clone();
    let product = state
        .bus()
        .product(
            &sku,
            &InventoryCommand::CreateProduct { draft },
            rid.as_str(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// The query string of `GET /products`. Every field is a string so that empty values
/// mean "absent" and bad values get our own messages.
#[derive(Debug, Deserialize)]
struct ListParams {
    category: Option<String>,
    active: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /products?category=&active=&limit=&cursor=` → `{"items","next_cursor"}`.
async fn list(
    State(state): State<AppState>,
    rid: RequestId,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Product>>, AppError> {
    let category = present(params.category);
    if let Some(c) = &category {
        valid_id("category", c)?;
    }
    let active = match present(params.active).as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(AppError::invalid("active must be true or false")),
    };
    let query = CatalogQuery {
        category,
        active,
        limit: page_limit(params.limit)?,
        cursor: page_cursor(params.cursor)?,
    };
    Ok(Json(state.bus().catalog(&query, rid.as_str()).await?))
}

/// `GET /products/{sku}` → product.
async fn read(
    State(state): State<AppState>,
    rid: RequestId,
    Path(sku): Path<String>,
) -> Result<Json<Product>, AppError> {
    valid_id("sku", &sku)?;
    let product = state
        .bus()
        .product(&sku, &InventoryCommand::GetProduct, rid.as_str())
        .await?;
    Ok(Json(product))
}

/// `PUT /products/{sku}` → product. The body may omit `sku` (the path names it); if it
/// has one, it must equal the path's.
async fn replace(
    State(state): State<AppState>,
    rid: RequestId,
    Path(sku): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<Product>, AppError> {
    valid_id("sku", &sku)?;
    let serde_json::Value::Object(mut fields) = body else {
        return Err(AppError::invalid("the body must be a JSON object"));
    };
    match fields.get("sku") {
        None => {
            fields.insert("sku".to_owned(), serde_json::Value::String(sku.clone()));
        }
        Some(serde_json::Value::String(s)) if *s == sku => {}
        Some(_) => return Err(AppError::invalid("sku in the body must match the path")),
    }
    let draft: ProductDraft = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| AppError::invalid(format!("invalid product: {e}")))?;
    draft.validate()?;
    let product = state
        .bus()
        .product(
            &sku,
            &InventoryCommand::ReplaceProduct { draft },
            rid.as_str(),
        )
        .await?;
    Ok(Json(product))
}

/// `DELETE /products/{sku}` → the deactivated product.
async fn deactivate(
    State(state): State<AppState>,
    rid: RequestId,
    Path(sku): Path<String>,
) -> Result<Json<Product>, AppError> {
    valid_id("sku", &sku)?;
    let product = state
        .bus()
        .product(&sku, &InventoryCommand::DeactivateProduct, rid.as_str())
        .await?;
    Ok(Json(product))
}
