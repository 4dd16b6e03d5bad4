//! `make generate`: writes every generated file of the repository (the table in
//! `meshop::generated`) and lists those that changed.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match meshop::generated::write_all(&root) {
        Ok(changed) if changed.is_empty() => {
            println!("every generated file is current");
            ExitCode::SUCCESS
        }
        Ok(changed) => {
            for path in changed {
                println!("wrote {path}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
