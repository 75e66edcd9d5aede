//! The terminal while `top` runs: raw mode and the alternate screen, restored on
//! every way out — return, error, signal (the loop ends and this guard drops) and
//! panic (ratatui's hook restores before the panic message is printed).

use ratatui::DefaultTerminal;

/// Holds the terminal in `top`'s mode until dropped.
pub struct TerminalSession {
    terminal: DefaultTerminal,
}

impl TerminalSession {
    /// Enters raw mode and the alternate screen, and installs the panic hook that
    /// leaves them.
    pub fn enter() -> std::io::Result<Self> {
        Ok(Self {
            terminal: ratatui::try_init()?,
        })
    }

    /// The terminal to draw on.
    pub fn terminal(&mut self) -> &mut DefaultTerminal {
        &mut self.terminal
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        ratatui::restore();
    }
}
