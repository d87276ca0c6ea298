//! Several instances sharing one bucket.
