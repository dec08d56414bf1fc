//! The `downhill` command's subcommands. The binary (`src/main.rs`) parses the command line
//! and runs one of them; the library also lets the fuzz targets reach `compare`'s TOML
//! configuration parser.

pub mod bench;
pub mod compare;
mod draw;
pub mod ranks;
pub mod trajectories;
pub mod verify;
