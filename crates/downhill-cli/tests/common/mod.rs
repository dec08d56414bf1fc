//! What the command's end-to-end tests share.

use std::process::Command;

/// Run the `downhill` binary with `args`: its exit status, stdout and stderr.
pub fn downhill(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args(args)
        .output()
        .expect("run downhill");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
