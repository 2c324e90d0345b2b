//! The packaged manual page (`packaging/debian/tsstore.1`, hand-written)
//! against the CLI it documents: every subcommand, nested ones included,
//! and every long option clap knows must appear in it, so a new flag
//! without a line in the page fails here.

use std::path::Path;

use clap::CommandFactory;
use tsstore::cli::Cli;

/// The page with roff's escaped hyphens (`\-`) made plain.
fn page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/tsstore.1");
    std::fs::read_to_string(path).unwrap().replace("\\-", "-")
}

/// `(where, what)`: each subcommand's name and each long option, walking
/// the whole command tree.
fn documented_items(cmd: &clap::Command, at: &str, out: &mut Vec<(String, String)>) {
    for arg in cmd.get_arguments() {
        if let Some(long) = arg.get_long() {
            out.push((at.to_string(), format!("--{long}")));
        }
    }
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        out.push((at.to_string(), name.to_string()));
        documented_items(sub, &format!("{at} {name}"), out);
    }
}

#[test]
fn man_page_lists_every_subcommand_and_option() {
    let text = page();
    let mut cmd = Cli::command();
    // Adds the generated `help` subcommand and the --help/--version flags.
    cmd.build();
    let mut items = Vec::new();
    documented_items(&cmd, "tsstore", &mut items);
    assert!(items.iter().any(|(_, w)| w == "revoke"), "{items:?}");
    let missing: Vec<String> = items
        .iter()
        .filter(|(_, what)| {
            let found = if what.starts_with("--") {
                text.contains(what.as_str())
            } else {
                // A subcommand is a section (.SS) or a bold/italic word of one.
                text.lines().any(|l| {
                    l.starts_with('.') && l.split_whitespace().any(|w| w.trim_matches('"') == what)
                })
            };
            !found
        })
        .map(|(at, what)| format!("{at}: {what}"))
        .collect();
    assert!(missing.is_empty(), "not in tsstore.1: {missing:?}");
}

#[test]
fn man_page_version_is_the_crate_version() {
    let th = page()
        .lines()
        .find(|l| l.starts_with(".TH "))
        .unwrap()
        .to_string();
    let want = format!("\"tsstore {}\"", env!("CARGO_PKG_VERSION"));
    assert!(th.contains(&want), "{th} should name {want}");
}
