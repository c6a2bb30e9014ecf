//! The NovaNet CNI plugin (spec 1.0/1.1: ADD, DEL, CHECK, STATUS, GC, VERSION).
fn main() {}
