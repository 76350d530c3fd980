//! Checks over collected evidence. Each check is pure logic fed by a source, so it can be tested on its own.

pub mod audit_chain;
