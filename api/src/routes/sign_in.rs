//! How a browser gets a token: `GET /auth/config` tells the shop page (or any client)
//! whether auth is on and how to sign in, and `POST /auth/demo` signs in a demo shopper
//! or admin when the edge runs with the development-only demo sign-in
//! (`CARTWHEEL_DEMO_SIGN_IN`). With a real identity provider the page sends people to
//! its login URL (`CARTWHEEL_LOGIN_URL`) instead, and the provider returns the token to
//! the page (README, "Signing in").

use crate::error::AppError;
use crate::extract::Json;
use crate::openapi::Errors;
use crate::state::AppState;
use axum::extract::State;
use cartwheel_domain::ErrorCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// How long a demo token lasts.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(config))
        .routes(routes!(demo))
}

/// How to sign in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SignInConfig {
    /// `off` (no identity: everything is open) or `jwt` (bearer tokens).
    auth: &'static str,
    /// Whether `POST /auth/demo` signs in demo shoppers and admins (development only).
    demo: bool,
    /// Where to send people to sign in with the identity provider, when configured.
    login_url: Option<String>,
}

/// How this edge authenticates and how a browser signs in (public).
#[utoipa::path(get, path = "/auth/config", tag = "identity",
    responses((status = 200, description = "how to sign in", body = SignInConfig), Errors),
    security(()))]
async fn config(State(state): State<AppState>) -> Json<SignInConfig> {
    let c = state.config();
    Json(SignInConfig {
        auth: if c.auth.is_on() { "jwt" } else { "off" },
        demo: c.sign_in.demo.is_some(),
        login_url: c.sign_in.login_url.clone(),
    })
}

/// Who to sign in as.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DemoRequest {
    /// `shopper` or `admin`.
    role: String,
}

/// A demo identity and its token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DemoToken {
    /// The bearer token (HS256, valid for 12 hours).
    token: String,
    /// The new user's id (the token's `sub`): `demo-shopper-…` or `demo-admin-…`.
    user_id: String,
    /// Roles in the token: `[]` or `["admin"]`.
    roles: Vec<String>,
    /// When the token expires (seconds since the epoch).
    expires_at: u64,
}

/// Sign in as a new demo shopper or demo admin (development only: 404 unless the edge
/// runs with `CARTWHEEL_DEMO_SIGN_IN`). Each call makes a new user.
#[utoipa::path(post, path = "/auth/demo", tag = "identity", request_body = DemoRequest,
    responses((status = 200, description = "a token for a new demo user", body = DemoToken), Errors),
    security(()))]
async fn demo(
    State(state): State<AppState>,
    Json(req): Json<DemoRequest>,
) -> Result<Json<DemoToken>, AppError> {
    let Some(issuer) = &state.config().sign_in.demo else {
        return Err(AppError::new(
            ErrorCode::NotFound,
            "demo sign-in is off (CARTWHEEL_DEMO_SIGN_IN)",
        ));
    };
    let roles = match req.role.as_str() {
        "shopper" => Vec::new(),
        "admin" => vec![crate::auth::ADMIN_ROLE.to_owned()],
        _ => return Err(AppError::invalid("role must be shopper or admin")),
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let user_id = format!("demo-{}-{}", req.role, &suffix[..8]);
    let issued = issuer
        .issue(&user_id, &roles, DEMO_TOKEN_TTL)
        .map_err(|e| {
            AppError::new(ErrorCode::Internal, "token not issued").with_detail(e.to_string())
        })?;
    tracing::info!(%user_id, role = %req.role, "demo sign-in");
    Ok(Json(DemoToken {
        token: issued.token,
        user_id,
        roles,
        expires_at: issued.expires_at,
    }))
}
