//! Streaming over WebSocket: the inbound read and write streams
//! (`/api/stores/:store/ws/read`, `/ws/write`) and their routes. The
//! frames and message ingestion they share with the outbound connections
//! are in [`crate::codec::frames`], the follower that reads a store in
//! order in [`crate::follow`], the outbound connections in
//! [`crate::outbound`].

pub mod ws;
