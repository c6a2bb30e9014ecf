//! novanetctl: the NovaNet command-line client of the agent.
fn main() {}
