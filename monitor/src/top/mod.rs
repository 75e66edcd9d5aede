//! `routemon top`: a live full-screen view of the ENIs, their default routes,
//! top flows, kernel drops and findings.

pub mod screen;
pub mod state;
pub mod terminal;
pub mod ui;
