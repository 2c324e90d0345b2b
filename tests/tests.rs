//! One integration test binary (keeps link time down); a module per area.

mod engine {
    mod api;
    mod crash;
    mod format_v1;
    mod kill;
    mod model;
}

#[cfg(feature = "server")]
mod server {
    mod cli;
    mod common;
    mod console;
    mod http;
    mod manpage;
    mod notify;
    mod openapi;
    mod outbound;
    mod unix;
    mod ws;
}
