//! `/cluster` (live nodes, partitions per node, lease ages, live actors) and
//! `/cluster/locate/{kind}/{id}` (where an entity lives right now), read from the
//! placement buckets the nodes keep in NATS KV.

use crate::auth::Caller;
use crate::error::AppError;
use crate::extract::{Json, Path};
use crate::openapi::Errors;
use crate::routes::valid_id;
use crate::state::AppState;
use axum::extract::State;
use cartwheel_bus::cluster::{self, ClusterStatus, Location};
use cartwheel_bus::names::EntityKind;
use cartwheel_domain::ErrorCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(locate))
}

fn js(state: &AppState) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(state.bus().nats().clone())
}

/// The cluster's status: live nodes, partitions per node, lease ages, live actors
/// (admin when auth is on).
#[utoipa::path(get, path = "/cluster", tag = "operations",
    responses((status = 200, description = "the cluster's status", content_type = "application/json"), Errors),
    security(("bearer" = [])))]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ClusterStatus>, AppError> {
    caller.admin()?;
    let bus = state.bus();
    cluster::status(&js(&state), bus.names(), bus.config().partitions)
        .await
        .map(Json)
        .map_err(|e| {
            AppError::new(ErrorCode::Unavailable, "cluster status unavailable")
                .with_detail(e.to_string())
        })
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
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Location>, AppError> {
    caller.admin()?;
    let kind = EntityKind::parse(&kind)
        .ok_or_else(|| AppError::invalid("kind must be cart, order or inventory"))?;
    valid_id("id", &id)?;
    let bus = state.bus();
    cluster::locate(&js(&state), bus.names(), bus.config().partitions, kind, &id)
        .await
        .map(Json)
        .map_err(|e| {
            AppError::new(ErrorCode::Unavailable, "cluster status unavailable")
                .with_detail(e.to_string())
        })
}
