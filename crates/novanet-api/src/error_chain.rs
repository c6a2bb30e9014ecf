//! One line for an error and its sources, as the agent puts it in a gRPC status and the CNI plugin shows
//! it to the runtime.

/// The error and its sources, each once (a source whose text is already in the line is skipped).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
