//! Dialogs (RFC 3261 §12), sans-I/O (being written).
