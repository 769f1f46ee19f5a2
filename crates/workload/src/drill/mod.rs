//! The fire drill's client side: the workload that records a [`history::History`], the checker
//! that judges it, and the report (figures, Markdown, JSON, timeline chart); beside the chat, the
//! login workload ([`login`]: sign-ins and refreshes through the OAuth endpoints); [`incidents`]:
//! whether the nodes opened, closed and told users of an incident for the fault.

pub mod chart;
pub mod checker;
pub mod history;
pub mod login;
pub mod incidents;
pub mod report;
pub mod workload;
