//! Files `cutover setup` writes: the post-receive hook, and for hosts that
//! use systemd or pm2 instead of the built-in manager, the unit or ecosystem
//! file and the command that reloads it.
//!
//! Both external managers run `cutover host exec APP`, which starts whatever
//! release `current` points at with its recorded command, so the generated
//! file never changes between releases.

use super::install::shell_quote;
use cutover_core::config::ProcessManager;
use std::path::Path;

/// The post-receive hook: every pushed ref goes to `cutover execute`, which
/// deploys the configured branch and skips the others with a message.
pub fn post_receive_hook(cutover: &Path, deployments_dir: &Path, branch: &str) -> String {
    format!(
        r#"#!/bin/sh
# Installed by `cutover setup`: a push to {branch} deploys it with cutover.
# Other branches are received but not deployed.
CUTOVER={cutover}
DEPLOYMENTS_DIR={deployments}
BRANCH={branch_q}
GIT_DIR=$(cd "${{GIT_DIR:-.}}" && pwd)
export GIT_DIR
status=0
while read oldrev newrev refname; do
    "$CUTOVER" execute --deployments-dir "$DEPLOYMENTS_DIR" --branch "$BRANCH" --ref "$refname" "$GIT_DIR" "$newrev" || status=$?
done
exit $status
"#,
        cutover = shell_quote(&cutover.display().to_string()),
        deployments = shell_quote(&deployments_dir.display().to_string()),
        branch_q = shell_quote(branch),
    )
}

/// A systemd unit running the current release of `app`.
pub fn systemd_unit(cutover: &Path, deployments_dir: &Path, app: &str, user: &str) -> String {
    format!(
        "[Unit]\n\
         Description={app} (deployed by cutover)\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         User={user}\n\
         WorkingDirectory={root}/current\n\
         ExecStart={cutover} host exec --deployments-dir {deployments} {app}\n\
         Restart=always\n\
         RestartSec=2\n\
         KillMode=control-group\n\
         TimeoutStopSec=30\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        root = deployments_dir.join(app).display(),
        cutover = cutover.display(),
        deployments = deployments_dir.display(),
    )
}

/// A pm2 ecosystem file running the current release of `app`.
pub fn pm2_ecosystem(cutover: &Path, deployments_dir: &Path, app: &str) -> String {
    let json = |s: &str| serde_json::to_string(s).expect("strings serialise");
    format!(
        "// Written by `cutover setup`; pm2 runs whatever release `current` points at.\n\
         module.exports = {{\n  apps: [{{\n    name: {name},\n    script: {script},\n    args: {args},\n    interpreter: \"none\",\n    cwd: {cwd},\n    autorestart: true,\n    kill_timeout: 30000,\n  }}],\n}};\n",
        name = json(app),
        script = json(&cutover.display().to_string()),
        args = json(&format!(
            "host exec --deployments-dir {} {app}",
            shell_quote(&deployments_dir.display().to_string())
        )),
        cwd = json(
            &deployments_dir
                .join(app)
                .join("current")
                .display()
                .to_string()
        ),
    )
}

/// The command that makes the manager run the new `current`.
pub fn reload_command(manager: ProcessManager, app: &str, root: &Path) -> String {
    match manager {
        ProcessManager::Systemd => format!(
            "systemctl restart {}",
            shell_quote(&format!("{app}.service"))
        ),
        ProcessManager::Pm2 => format!(
            "pm2 startOrReload {} --update-env",
            shell_quote(&root.join("ecosystem.config.js").display().to_string())
        ),
        ProcessManager::Builtin => String::from("true"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn hook_calls_this_binary_with_the_branch() {
        let hook = post_receive_hook(
            &PathBuf::from("/usr/local/bin/cutover"),
            &PathBuf::from("/opt/deployments"),
            "main",
        );
        assert!(hook.starts_with("#!/bin/sh\n"));
        assert!(hook.contains("CUTOVER=/usr/local/bin/cutover\n"));
        assert!(hook.contains(
            r#""$CUTOVER" execute --deployments-dir "$DEPLOYMENTS_DIR" --branch "$BRANCH""#
        ));
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&hook)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn systemd_unit_runs_the_current_release() {
        let unit = systemd_unit(
            &PathBuf::from("/usr/local/bin/cutover"),
            &PathBuf::from("/opt/deployments"),
            "web",
            "www-data",
        );
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/cutover host exec --deployments-dir /opt/deployments web\n"
        ));
        assert!(unit.contains("WorkingDirectory=/opt/deployments/web/current\n"));
        assert!(unit.contains("KillMode=control-group"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn pm2_ecosystem_is_valid_javascript_shape() {
        let eco = pm2_ecosystem(
            &PathBuf::from("/bin/cutover"),
            &PathBuf::from("/srv/d"),
            "web",
        );
        assert!(eco.contains(r#"name: "web""#));
        assert!(eco.contains(r#"args: "host exec --deployments-dir /srv/d web""#));
        assert!(eco.contains(r#"interpreter: "none""#));
        assert_eq!(
            reload_command(ProcessManager::Pm2, "web", Path::new("/srv/d/web")),
            "pm2 startOrReload /srv/d/web/ecosystem.config.js --update-env"
        );
        assert_eq!(
            reload_command(ProcessManager::Systemd, "web", Path::new("/x")),
            "systemctl restart web.service"
        );
    }
}
