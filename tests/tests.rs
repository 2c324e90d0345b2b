//! One integration test binary (keeps link time down); a module per area.

/// Starts binaries built for the target (`tsstore`, or this test binary
/// again) through `TSSTORE_TEST_RUNNER` when it is set.
///
/// Cross-built tests run under qemu-user (`make cross-test`): cargo's
/// `runner` starts the test binary, but a process the tests spawn is exec'd
/// by the host kernel, which cannot run an aarch64 or armv7 ELF without a
/// binfmt_misc registration. Rather than change the machine's binfmt
/// settings, `make cross-test` sets `TSSTORE_TEST_RUNNER` to the same qemu
/// command (split on whitespace, like cargo's `runner`). Host runs leave it
/// unset and exec the binary directly.
mod runner {
    use std::ffi::OsStr;
    use std::process::Command;

    pub fn command(exe: impl AsRef<OsStr>) -> Command {
        let runner = std::env::var("TSSTORE_TEST_RUNNER").unwrap_or_default();
        let mut words = runner.split_whitespace();
        let Some(program) = words.next() else {
            return Command::new(exe);
        };
        let mut c = Command::new(program);
        c.args(words).arg(exe);
        c
    }
}

mod engine {
    mod api;
    mod crash;
    mod crash_threads;
    mod format_v1;
    mod fs_cut;
    mod kill;
    mod model;
    mod scenarios;
}

#[cfg(feature = "server")]
mod server {
    mod agg;
    mod busy;
    mod cli;
    mod common;
    mod console;
    mod container;
    mod export;
    mod fs_cut;
    mod http;
    mod kill;
    mod manpage;
    mod mosquitto;
    mod mqtt_sink;
    mod mqtt_sub;
    mod notify;
    mod openapi;
    mod outbound;
    mod rules;
    mod security_limits;
    mod security_outbound;
    mod stream_agg;
    mod unix;
    mod ws;
}
