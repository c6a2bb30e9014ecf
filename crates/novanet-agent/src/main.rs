//! The node daemon: sources -> model -> dataplane; gRPC on a unix socket.
fn main() {}
