//! `meshop completion bash|zsh|fish`: completion scripts generated from the same clap definition
//! the binary parses with, so they cannot fall behind a new command or flag.

/// The shells meshop writes completion scripts for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(generator, &mut super::command(), "meshop", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_completes_the_day2_commands_and_their_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = script(shell);
            // Fish spells long flags `-l kubeconfig`.
            let flag = match shell {
                Shell::Fish => "-l kubeconfig",
                _ => "--kubeconfig",
            };
            for word in ["check", "status", "diff", "convert", flag] {
                assert!(script.contains(word), "{shell:?} lacks {word}");
            }
        }
        assert!(script(Shell::Bash).contains("complete -F _meshop"));
        assert!(script(Shell::Zsh).starts_with("#compdef meshop"));
        assert!(script(Shell::Fish).contains("complete -c meshop"));
    }
}
