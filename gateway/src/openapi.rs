//! The OpenAPI document, generated from the handlers and their types. A key goes in
//! `Authorization: Bearer <key>` or in `X-API-Key`: the two security schemes. `openapi.json` at the
//! crate root is this document, committed; a test fails when it is stale.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::{commands, ops, runs};

#[derive(OpenApi)]
#[openapi(
    info(title = "MindBus gateway", description = "HTTP in front of the MindBus message bus: commands, workflow runs, and what the mesh looks like."),
    paths(
        commands::publish, commands::show, commands::events,
        runs::start, runs::list, runs::show, runs::events, runs::cancel, runs::approve,
        ops::roles, ops::streams, ops::healthz, ops::readyz, ops::openapi,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Keys),
)]
struct Api;

struct Keys;

impl Modify for Keys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    Api::openapi()
}
