//! template.yaml and `tollgate init` create tables from one definition
//! (`tollgate::adapters::dynamodb::tables`): this test fails when they drift apart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate::adapters::dynamodb::TableNames;
use tollgate::adapters::dynamodb::tables::{
    CLOUDFORMATION_PREFIX, cloudformation_block, cloudformation_yaml,
};

#[test]
fn template_yaml_holds_exactly_the_generated_dynamodb_tables() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let template = std::fs::read_to_string(path).unwrap();
    let block = cloudformation_block(&template).expect(
        "template.yaml has the `# BEGIN generated tables` / `# END generated tables` markers",
    );
    let rendered = cloudformation_yaml(&TableNames::with_prefix(CLOUDFORMATION_PREFIX));
    assert!(
        block == rendered,
        "template.yaml's tables differ from adapters::dynamodb::tables. Replace the block \
         between the markers with the output of `tollgate init --cloudformation`:\n{rendered}"
    );
}
