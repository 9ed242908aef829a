//! Rules on HTTP requests that more than one daemon applies: which requests are kept
//! ([`selection`], at capture and again at replay), how a replay rewrites what it sends
//! ([`replay`]), the endpoint a request counts under in results ([`endpoint`]), and
//! which fields of two responses differ ([`diff`]). Compiled once, checked before anything is stored or sent: a rule
//! that does not compile is an error, never a rule that matches nothing.

pub mod diff;
pub mod endpoint;
pub mod replay;
pub mod selection;
