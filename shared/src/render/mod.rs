//! Wire rendering at the edge: a service's typed reply (`service::ChatReply`: a
//! `Completion`, or a stream of `ChatEvent`s) in the format the client speaks. Services never
//! build response bodies; a new inbound API adds a renderer here.

pub mod anthropic;
pub mod openai;
