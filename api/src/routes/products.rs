//! `/products`: create, list, read, replace, deactivate. Each sku is one inventory actor;
//! lists come from the catalog query.

use super::{page_cursor, page_limit, present, valid_id};
use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{Json, Path, Query, RequestId};
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use cartwheel_bus::messages::{CatalogQuery, InventoryCommand, Page};
use cartwheel_domain::{Product, ProductDraft};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read, replace, deactivate))
}

/// Add a product to the catalog (admin).
#[utoipa::path(post, path = "/products", tag = "catalog", request_body = ProductDraft,
    responses((status = 201, description = "the product", body = Product), Errors),
    security(("bearer" = [])))]
async fn create(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Json(draft): Json<ProductDraft>,
) -> Result<(StatusCode, Json<Product>), AppError> {
    caller.admin()?;
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only this category.
    category: Option<String>,
    /// `true` or `false`: only active (or inactive) products.
    active: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List products by sku (public).
#[utoipa::path(get, path = "/products", tag = "catalog", params(ListParams),
    responses((status = 200, description = "a page of products", body = Page<Product>), Errors),
    security(()))]
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

/// Read a product (public).
#[utoipa::path(get, path = "/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the product", body = Product), Errors),
    security(()))]
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

/// Replace a product (admin). The body may omit `sku` (the path names it); if it has
/// one, it must equal the path's.
#[utoipa::path(put, path = "/products/{sku}", tag = "catalog", request_body = ProductDraft,
    params(("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the product", body = Product), Errors),
    security(("bearer" = [])))]
async fn replace(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(sku): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<Product>, AppError> {
    caller.admin()?;
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

/// Deactivate a product (admin): it stays, not for sale.
#[utoipa::path(delete, path = "/products/{sku}", tag = "catalog",
    params(("sku" = String, Path, description = "product", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the deactivated product", body = Product), Errors),
    security(("bearer" = [])))]
async fn deactivate(
    State(state): State<AppState>,
    rid: RequestId,
    caller: Caller,
    Path(sku): Path<String>,
) -> Result<Json<Product>, AppError> {
    caller.admin()?;
    valid_id("sku", &sku)?;
    let product = state
        .bus()
        .product(&sku, &InventoryCommand::DeactivateProduct, rid.as_str())
        .await?;
    Ok(Json(product))
}
