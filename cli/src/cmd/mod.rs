//! The command groups: each module owns its clap subcommands and runs them.
//! What several groups share (the context, signing, output, parsing) lives
//! outside `cmd`.

pub mod apply;
pub mod audit;
pub mod completion;
pub mod container;
pub mod deploy;
pub mod export;
pub mod image;
pub mod member;
pub mod node;
pub mod product;
pub mod profile;
pub mod registry;
pub mod team;
pub mod ui;
pub mod up;
pub mod version;
