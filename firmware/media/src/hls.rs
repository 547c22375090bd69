//! LL-HLS playlist rendering and query parsing (being written).
