//! The service attribute's errors, as a user sees them.

#[test]
fn mistakes_are_told_where_they_are_made() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
