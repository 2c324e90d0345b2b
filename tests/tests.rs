//! One integration test binary (keeps link time down); a module per area.

mod engine {
    mod api;
    mod crash;
    mod kill;
    mod model;
}
