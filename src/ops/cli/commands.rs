//! The admin subcommands that take more than a line: the breach response, keys and OAuth clients.

use anyhow::Context;

use super::{AuditAction, BreachArgs, ClientsAction, InvitesAction, KeysAction};
use crate::config::Config;
use crate::domain::audit_export::{verify_export, ChainHead};
use crate::domain::oauth::clients::{ClientKind, NewClient};
use crate::domain::tokens::TokenKind;
use crate::keys::signing::SigningAlg;
use crate::keys::KeyPurpose;
use crate::ops::admin::Console;

pub(super) async fn breach_response(console: &Console, config: &Config, args: BreachArgs) -> anyhow::Result<()> {
    use crate::ops::breach_response::{plan_path, Affected, Options, Plan};
    let key_file = config.key_file();
    let (mut plan, path) = match args.resume {
        Some(path) => (Plan::load(&path)?, path),
        None => {
            let affected = match (&args.users, args.all) {
                (Some(file), false) => Affected::Listed(console.resolve_users(&read_list(file)?).await?),
                (None, true) => Affected::All,
                _ => anyhow::bail!("name the affected accounts: --users FILE or --all"),
            };
            if !(args.rotate_keys
                || args.revoke.is_some()
                || args.force_password_reset
                || args.reset_second_factors
                || args.notify)
            {
                anyhow::bail!("nothing to do: add --revoke, --rotate-keys, --force-password-reset, --reset-second-factors or --notify");
            }
            let text = args.text.or_defaults();
            let options = Options {
                affected,
                rotate_keys: args.rotate_keys,
                revoke: args.revoke,
                force_password_reset: args.force_password_reset,
                reset_second_factors: args.reset_second_factors,
                notify: args.notify,
                what_happened: text.what_happened,
                what_we_did: text.what_we_did,
            };
            let plan = console.plan_breach_response(options).await?;
            let path = plan_path(&key_file, &plan.id);
            (plan, path)
        }
    };
    if plan.finished {
        println!("the plan {} finished already", path.display());
        return Ok(());
    }
    println!("breach response for {} account(s):", plan.users.len());
    for (n, step) in console.describe_breach_response(&plan).iter().enumerate() {
        println!("  {}. {step}", n + 1);
    }
    if args.dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
    println!("plan: {} (continue a stopped run with --resume {})", path.display(), path.display());
    console.run_breach_response(&mut plan, &path, &key_file).await?;
    println!("done: {} account(s) handled; verify with `keywarden admin audit verify`", plan.users_done);
    Ok(())
}

/// A list of accounts from a file, or from standard input for `-`.
pub(super) fn read_list(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the list from standard input")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

pub(super) async fn keys(console: &Console, config: &Config, action: KeysAction) -> anyhow::Result<()> {
    let path = config.key_file();
    match action {
        KeysAction::Rotate { key, activate_in } => {
            let purpose = key.purpose();
            let secs = i64::try_from(activate_in).context("--activate-in is too large")?;
            let active_from = crate::clock::now_ms() + secs * 1000;
            let id = console.rotate_keys(&path, &[purpose], active_from).await?.swap_remove(0);
            println!("new {} key {id} written to {}; active in {activate_in} s", purpose.name(), path.display());
            println!("copy the file to every other node now: running servers reload it within seconds");
            if matches!(purpose, KeyPurpose::Data | KeyPurpose::BlindIndex) {
                println!(
                    "servers re-wrap existing values in the background; `keywarden admin keys rewrap` does it now"
                );
            }
        }
        KeysAction::Status { json } => {
            let usage = console.key_usage().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&usage)?);
            } else {
                println!("{:<12} {:<36} {:<10} rows", "purpose", "key id", "state");
                for u in usage {
                    let state = match (u.active, u.active_from) {
                        (true, _) => "active",
                        (false, Some(_)) => "next",
                        (false, None) => "old",
                    };
                    println!("{:<12} {:<36} {:<10} {}", u.purpose, u.key_id, state, u.rows);
                }
                println!("rows to re-wrap: {}", console.rewrap_remaining().await?);
            }
        }
        KeysAction::Rewrap { batch } => {
            let mut progress = crate::ops::progress::Progress::new("re-wrapping");
            let (done, remaining) = console
                .rewrap_all(batch.clamp(1, 10_000), |done, _remaining, total| {
                    let total = usize::try_from(total).unwrap_or_default();
                    progress.update(usize::try_from(done).unwrap_or_default().min(total), total);
                })
                .await?;
            progress.finish();
            println!("{done} value(s) re-wrapped under the active keys; {remaining} remaining");
            if remaining > 0 {
                anyhow::bail!("{remaining} value(s) could not be re-wrapped yet (is the new key active?)");
            }
        }
        KeysAction::Retire { key, id, force } => {
            let purpose = key.purpose();
            let rows = console.retire_keys(&path, &[(purpose, id.clone())], force).await?.swap_remove(0);
            println!("retired {} key {id}; {rows} row(s) depended on it", purpose.name());
            println!("copy the file to every other node: running servers reload it within seconds");
        }
    }
    Ok(())
}

pub(super) fn parse_signing_alg(name: &str) -> Result<SigningAlg, String> {
    SigningAlg::parse(name).ok_or_else(|| format!("{name:?} is not ES256 or EdDSA"))
}

pub(super) async fn clients(console: &Console, action: ClientsAction) -> anyhow::Result<()> {
    let clients = console.clients();
    let actor = console.actor();
    match action {
        ClientsAction::Add {
            id,
            name,
            public,
            redirect_uris,
            backchannel_logout_uri,
            security_event_uri,
            first_party,
            jwks_file,
            id_token_alg,
        } => {
            let kind = if public { ClientKind::Public } else { ClientKind::Confidential };
            let jwks = jwks_file
                .map(|path| std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display())))
                .transpose()?;
            let new = NewClient {
                id,
                name,
                kind,
                redirect_uris,
                backchannel_logout_uri,
                security_event_uri,
                first_party,
                id_token_alg,
                jwks,
            };
            let (client, secret) = clients.register(new, actor).await?;
            println!("registered {} client {:?}", client.kind.as_str(), client.id);
            if let Some(secret) = secret {
                println!("client_secret: {}", secret.as_str());
                println!("(shown once: keywarden keeps only a keyed digest of it)");
            }
        }
        ClientsAction::List { json } => {
            let list = clients.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<13} {:<11} {:<28} redirect URIs", "id", "kind", "first-party", "name");
                for c in list {
                    let kind = c.kind.as_str();
                    let first_party = if c.first_party { "yes" } else { "no" };
                    println!(
                        "{:<24} {:<13} {:<11} {:<28} {}",
                        c.id,
                        kind,
                        first_party,
                        c.name,
                        c.redirect_uris.join(" ")
                    );
                }
            }
        }
        ClientsAction::GenerateSecret => {
            println!("{}", TokenKind::ClientSecret.mint().as_str());
        }
        ClientsAction::Remove { id } => {
            clients.remove(&id, actor).await?;
            println!("removed client {id:?}; revoke its tokens with `keywarden admin revoke --channel {id}`");
        }
        ClientsAction::RotateSecret { id } => {
            let secret = clients.rotate_secret(&id, actor).await?;
            println!("client_secret: {}", secret.as_str());
            println!("(shown once; the previous secret no longer works)");
        }
    }
    Ok(())
}

/// Writes a file only its owner can read.
pub(super) fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = create_private(path)?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// A new file readable by its owner only (it never replaces one).
fn create_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("cannot create {}", path.display()))
}

pub(super) async fn audit(console: &Console, action: AuditAction) -> anyhow::Result<()> {
    match action {
        AuditAction::Verify { file: _, head } => {
            let head = head.as_deref().map(str::parse::<ChainHead>).transpose().map_err(anyhow::Error::msg)?;
            let (checked, problems) = console.verify_audit(head.as_ref()).await?;
            report_verification(checked, &problems)
        }
        AuditAction::Export { since, until, output } => {
            use std::io::Write as _;
            let since = since.as_deref().map(super::parse_instant).transpose()?;
            let until = until.as_deref().map(super::parse_instant).transpose()?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(create_private(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let count = console
                .export_audit(since, until, |event| {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")
                })
                .await?;
            out.flush()?;
            if let Some(path) = output {
                println!(
                    "wrote {count} events to {} (it names accounts and addresses: keep it private)",
                    path.display()
                );
            }
            Ok(())
        }
        AuditAction::Head => {
            println!("{}", console.audit_head().await?);
            Ok(())
        }
    }
}

fn report_verification(checked: u64, problems: &[String]) -> anyhow::Result<()> {
    if problems.is_empty() {
        println!("audit log intact: {checked} events verified");
        return Ok(());
    }
    for problem in problems {
        println!("TAMPERED: {problem}");
    }
    anyhow::bail!("the audit log was tampered with: {} problem(s) in {checked} events", problems.len())
}

/// `admin audit verify --file F [--head SEQ:HEX]`: an export checked with the key file alone.
pub(super) fn verify_audit_export(config: &Config, file: &std::path::Path, head: Option<&str>) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let head = head.map(str::parse::<ChainHead>).transpose().map_err(anyhow::Error::msg)?;
    let keyring = crate::server::existing_keyring(config)?;
    let reader =
        std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?);
    let mut read_error = None;
    let lines = reader.lines().enumerate().map_while(|(at, line)| match line {
        Ok(text) => {
            Some(serde_json::from_str(&text).map_err(|e| format!("line {} is not an exported event: {e}", at + 1)))
        }
        Err(err) => {
            read_error = Some(err);
            None
        }
    });
    let report = verify_export(&keyring, lines, head.as_ref());
    if let Some(err) = read_error {
        return Err(anyhow::Error::new(err).context(format!("cannot read {}", file.display())));
    }
    report_verification(report.events_checked, &report.problems)
}

pub(super) async fn invites(console: &Console, config: &Config, action: InvitesAction) -> anyhow::Result<()> {
    match action {
        InvitesAction::Create { email, expires, uses } => {
            let ttl = humantime::parse_duration(&expires)
                .with_context(|| format!("{expires:?} is not a duration such as 7d, 48h or 30m"))?;
            let ttl_secs = i64::try_from(ttl.as_secs()).context("duration out of range")?;
            let invite = console.create_invite(email.as_deref(), ttl_secs, uses).await?;
            let base = config.public_url();
            let link = format!("{}/signup?invite={}", base.trim_end_matches('/'), invite.code.as_str());
            println!("{link}");
            eprintln!(
                "invitation {}: {} use(s), valid until {}{}; the link is shown this once",
                invite.id,
                invite.uses,
                crate::clock::rfc3339(invite.expires_at),
                email.map(|e| format!(", for {e} only")).unwrap_or_default()
            );
            if console.signup_mode() != crate::domain::policy::SignupMode::Invite {
                eprintln!("note: signup.mode is not \"invite\" here, so sign-up does not ask for invitations");
            }
        }
        InvitesAction::List { json } => {
            let list = console.list_invites().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<38} {:<6} {:<10} {:<26} for", "id", "live", "uses left", "expires");
            for invite in list {
                println!(
                    "{:<38} {:<6} {:<10} {:<26} {}",
                    invite.id,
                    if invite.live { "yes" } else { "no" },
                    format!("{}/{}", invite.uses_left, invite.uses),
                    invite.expires_at,
                    invite.email.as_deref().unwrap_or("anyone")
                );
            }
        }
        InvitesAction::Revoke { id } => {
            if !console.revoke_invite(&id).await? {
                anyhow::bail!("no live invitation has the id {id:?}");
            }
            println!("revoked invitation {id}");
        }
    }
    Ok(())
}
