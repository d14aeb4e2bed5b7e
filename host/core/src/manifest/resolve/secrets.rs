//! `[secrets.NAME]`: a secret's name and the hosts its value may go to. The
//! value itself never appears in a manifest (a run pins its manifests into
//! the journal); the host supplies it from its environment or a secrets file.

use super::*;
use crate::app::hosts::HostPattern;
use crate::app::{SecretSpec, secret_env_var};

impl Resolver<'_> {
    /// Reads a file's `[secrets]` table into the app's secrets and the names
    /// its steps may be granted.
    pub(super) fn secrets_table(
        &mut self,
        file: &mut File,
        table: &IndexMap<Spanned<String>, Spanned<authored::SecretSection>>,
    ) {
        for (name, section) in table {
            self.check_name(file, name, "a secret");
            let declared = section.get_ref();
            if let Some(value) = &declared.value {
                self.error(
                    file,
                    value.span(),
                    "a secret's value is never written in a manifest",
                )
                .label("remove this");
                self.add_help(format!(
                    "a run pins its manifests into the journal, so a value here would be stored; \
                     give the host the value instead: set {} or pass --secrets FILE",
                    secret_env_var(name.get_ref())
                ));
            }
            if declared.hosts.is_empty() {
                self.error(
                    file,
                    section.span(),
                    format!("the secret '{}' names no hosts", name.get_ref()),
                );
                self.add_help(format!(
                    "say where its value may be sent, e.g.\n[secrets.{}]\nhosts = [\"https://api.example.com\"]",
                    name.get_ref()
                ));
            }
            let mut hosts = Vec::new();
            for host in &declared.hosts {
                match HostPattern::parse(host.get_ref()) {
                    Ok(pattern) => hosts.push(pattern),
                    Err(e) => {
                        self.error(file, host.span(), e.message);
                        self.add_help(e.help);
                    }
                }
            }
            let declared_at = format!(
                "{}:{}",
                file.source.display_name(),
                file.source.line_of(name.span().start)
            );
            if let Some(earlier) = self.secrets.get(name.get_ref())
                && earlier.hosts != hosts
            {
                let earlier = earlier.declared_at.clone();
                self.error(
                    file,
                    name.span(),
                    format!(
                        "the secret '{}' is declared at {earlier} with other hosts",
                        name.get_ref()
                    ),
                );
                self.add_help(
                    "a secret has one list of hosts: declare it once, or the same in both",
                );
                continue;
            }
            file.secrets.push(name.get_ref().clone());
            self.secrets
                .insert(name.get_ref().clone(), SecretSpec { hosts, declared_at });
        }
    }
}
