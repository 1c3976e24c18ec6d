//! The OpenAPI document, generated from the handlers and their types. `openapi.json` at the
//! crate root is this document, committed; a test fails when it is stale.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{commands, ops, runs};

#[derive(OpenApi)]
#[openapi(
    info(title = "MindBus gateway", description = "HTTP in front of the MindBus message bus: commands, workflow runs, and what the mesh looks like."),
    paths(
        commands::publish, commands::show, commands::events,
        runs::start, runs::show, runs::events, runs::cancel, runs::approve,
        ops::agents, ops::streams, ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&ApiKey),
)]
struct Api;

struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    Api::openapi()
}
