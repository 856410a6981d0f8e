//! The client side of digest authentication (RFC 3261 §22.2, RFC 7616), being written.
