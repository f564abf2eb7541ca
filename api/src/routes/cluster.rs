//! `/cluster` (live nodes, partitions per node, lease ages, live actors) and
//! `/cluster/locate/{kind}/{id}` (where an entity lives right now), asked of any node
//! over `{prefix}.query.cluster.*`: the nodes read the placement buckets they keep in
//! NATS KV, which an edge with least-privilege credentials may not read itself.

use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{Json, Path, RequestId};
use crate::openapi::Errors;
use crate::routes::valid_id;
use crate::state::AppState;
use axum::extract::State;
use cartwheel_bus::cluster::{ClusterStatus, Location};
use cartwheel_bus::names::EntityKind;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(locate))
}

/// The cluster's status: live nodes, partitions per node, lease ages, live actors
/// (admin when auth is on).
#[utoipa::path(get, path = "/cluster", tag = "operations",
    responses((status = 200, description = "the cluster's status", content_type = "application/json"), Errors),
    security(("bearer" = [])))]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    rid: RequestId,
) -> Result<Json<ClusterStatus>, AppError> {
    caller.admin()?;
    Ok(Json(state.bus().cluster_status(rid.as_str()).await?))
}

/// Where an entity lives right now: `{"kind","id","partition","node"}` (admin when auth
/// is on).
#[utoipa::path(get, path = "/cluster/locate/{kind}/{id}", tag = "operations",
    params(("kind" = String, Path, description = "cart, order or inventory"), ("id" = String, Path, description = "entity id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "the entity's partition and node", content_type = "application/json"), Errors),
    security(("bearer" = [])))]
async fn locate(
    State(state): State<AppState>,
    caller: Caller,
    rid: RequestId,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Location>, AppError> {
    caller.admin()?;
    let kind = EntityKind::parse(&kind)
        .ok_or_else(|| AppError::invalid("kind must be cart, order or inventory"))?;
    valid_id("id", &id)?;
    Ok(Json(state.bus().locate(kind, &id, rid.as_str()).await?))
}
