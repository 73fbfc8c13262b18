//! Client and server cannot drift apart: every GraphQL document `flash-api` sends is
//! validated (fields, arguments, variable types) against `flash server`'s own schema, with
//! apollo-compiler as an independent validator.

use apollo_compiler::{ExecutableDocument, Schema};
use async_graphql::EmptySubscription;
use flash_control::graphql::{Mutation, Query};

#[test]
fn every_operation_the_client_sends_is_valid_against_flash_servers_schema() {
    let sdl = async_graphql::Schema::build(Query, Mutation, EmptySubscription)
        .finish()
        .sdl();
    let schema = Schema::parse_and_validate(&sdl, "flash-control.graphql")
        .unwrap_or_else(|e| panic!("flash server's SDL does not validate: {e}\n{sdl}"));
    let mut invalid = Vec::new();
    for (name, document) in flash_api::operations::ALL {
        match ExecutableDocument::parse_and_validate(&schema, *document, format!("{name}.graphql"))
        {
            Ok(doc) => {
                let operation = doc
                    .operations
                    .get(Some(name))
                    .unwrap_or_else(|_| panic!("`{name}` is not the name of its document"));
                assert!(operation.name.is_some(), "`{name}` has no operation name");
            }
            Err(e) => invalid.push(format!("{name}: {e}")),
        }
    }
    assert!(
        invalid.is_empty(),
        "invalid operations:\n{}",
        invalid.join("\n")
    );
    assert!(flash_api::operations::ALL.len() >= 22);
}
