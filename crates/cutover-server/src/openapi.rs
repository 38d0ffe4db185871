//! The OpenAPI 3.1 description of the API, generated from the handlers' annotations and
//! the wire types, served at `/api/openapi.json`. A copy is committed at
//! `docs/openapi.json`; a test fails when the two differ.

use crate::dto;
use crate::problem::Problem;
use crate::routes::{admin, deployments, environments, monitoring, plans};
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cutover",
        description = "Roll new versions out safely: firmware to device fleets and releases to servers. Every route needs X-API-Key or Authorization: Bearer; errors are application/problem+json.",
        license(name = "MIT")
    ),
    paths(
        environments::list,
        environments::detail,
        plans::create,
        plans::list,
        plans::show,
        plans::approve,
        deployments::execute,
        deployments::list,
        deployments::show,
        deployments::events,
        deployments::cancel,
        deployments::rollback,
        deployments::pause,
        deployments::resume,
        deployments::promote,
        monitoring::health_checks,
        monitoring::system_metrics,
        monitoring::deployment_report,
        monitoring::summary_report,
        admin::list_targets,
        admin::create_key,
        admin::list_keys,
        admin::revoke_key,
        admin::list_audit,
        admin::verify_audit,
    ),
    components(schemas(Problem, dto::StrategyName, crate::auth::Role)),
    modifiers(&Security),
    tags(
        (name = "environments", description = "Environments and their policy"),
        (name = "plans", description = "Deployment plans and approvals"),
        (name = "deployments", description = "Executions, their progress and operator commands"),
        (name = "monitoring", description = "Health checks and metrics"),
        (name = "reports", description = "Reports per deployment and over time"),
        (name = "targets", description = "Devices and hosts"),
        (name = "keys", description = "API keys (admin)"),
        (name = "audit", description = "The hash-chained audit log (admin)"),
    )
)]
pub struct ApiDoc;

/// The description as pretty JSON with a trailing newline, as committed in docs/openapi.json.
pub fn spec_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /api/openapi.json`.
pub async fn serve_spec() -> impl IntoResponse {
    static SPEC: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        SPEC.get_or_init(spec_json).clone(),
    )
}
