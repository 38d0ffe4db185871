//! deploy.yml and config.yml: the seed's files as written, defaults, and
//! located errors.

use cutover_core::config::values::Duration;
use cutover_core::config::{AppType, ConfigError, DeployConfig, HostConfig, ProcessManager, Vars};

fn deploy(text: &str) -> DeployConfig {
    match DeployConfig::from_yaml(text, "deploy.yml") {
        Ok((config, _)) => config,
        Err(e) => panic!("expected a valid deploy.yml, got: {e}"),
    }
}

fn deploy_err(text: &str) -> ConfigError {
    match DeployConfig::from_yaml(text, "deploy.yml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn seed_deploy_yml_with_command() {
    let c = deploy(
        "\nname: test-app\ntype: python\nhealthCheck: /health\ncommand: python -m uvicorn main:app\n",
    );
    assert_eq!(c.name, "test-app");
    assert_eq!(c.app_type, AppType::Python);
    assert_eq!(c.health_check.path, "/health");
    assert_eq!(c.command.as_deref(), Some("python -m uvicorn main:app"));
}

#[test]
fn seed_minimal_deploy_yml_takes_defaults() {
    let c = deploy("\nname: minimal-app\ntype: python\nhealthCheck: /health\n");
    assert_eq!(c.command, None);
    assert_eq!(c.keep_releases, 5);
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.health_check.interval, Duration::from_secs(1));
    assert_eq!(c.health_check.timeout, Duration::from_secs(5));
    assert_eq!(c.health_check.success_threshold, 1);
    assert_eq!(c.health_check.deadline, Duration::from_secs(30));
    assert_eq!(c.hooks.pre_deploy, None);
}

#[test]
fn seed_template_with_comments_and_hooks() {
    let text = r#"# Deployment configuration
# See: https://github.com/you/deployment-paradigm

# Required fields
name: my-app              # Deployment name
type: python              # python|node|docker|static
healthCheck: /health      # Health check endpoint (relative path)

# Optional fields
command: python -m uvicorn main:app  # Override default start command

# Optional hooks
hooks:
  preDeploy: ./scripts/migrate.sh    # Run before deployment (e.g., migrations)
  postDeploy: ./scripts/notify.sh    # Run after successful deployment
"#;
    let (c, warnings) =
        DeployConfig::from_yaml(text, "deploy.yml").unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.hooks.pre_deploy.as_deref(), Some("./scripts/migrate.sh"));
    assert_eq!(c.hooks.post_deploy.as_deref(), Some("./scripts/notify.sh"));
}

#[test]
fn the_shipped_deploy_example_passes() {
    let text = include_str!("../../../examples/deploy.yml");
    let (c, warnings) =
        DeployConfig::from_yaml(text, "deploy.yml").unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.app_type, AppType::Python);
}

#[test]
fn health_check_tuning_and_release_settings() {
    let c = deploy(
        "name: api\ntype: docker\nhealthCheck:\n  path: /up\n  interval: 2s\n  timeout: 3\n  successThreshold: 2\n  deadline: 1m\nkeepReleases: 3\ndrainTimeout: 10s\nshared:\n  files: [.env]\n  dirs: [uploads]\ninstall: make deps\ndocker:\n  containerPort: 3000\n  buildArgs:\n    VERSION: \"1.2\"\n",
    );
    assert_eq!(c.health_check.path, "/up");
    assert_eq!(c.health_check.interval, Duration::from_secs(2));
    assert_eq!(c.health_check.timeout, Duration::from_secs(3));
    assert_eq!(c.health_check.success_threshold, 2);
    assert_eq!(c.health_check.deadline, Duration::from_secs(60));
    assert_eq!(c.keep_releases, 3);
    assert_eq!(c.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.shared.files, vec![".env".to_string()]);
    assert_eq!(c.shared.dirs, vec!["uploads".to_string()]);
    assert_eq!(c.install.as_deref(), Some("make deps"));
    let docker = c.docker_settings();
    assert_eq!(docker.container_port, 3000);
    assert_eq!(docker.dockerfile, "Dockerfile");
    assert_eq!(
        docker.build_args.get("VERSION").map(String::as_str),
        Some("1.2")
    );
}

#[test]
fn missing_type_is_located() {
    let e = deploy_err("\nname: missing-type\nhealthCheck: /health\n");
    assert_eq!(e.path(), "type");
    assert_eq!(e.location().line(), Some(2));
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn unknown_type_names_the_choices() {
    let e = deploy_err("name: a\ntype: ruby\nhealthCheck: /health\n");
    let text = e.to_string();
    assert!(text.starts_with("deploy.yml:2:7: type: expected one of python, node, docker, static, custom, found \"ruby\""), "{text}");
}

#[test]
fn wrong_types_and_bad_values_are_located() {
    let e = deploy_err("name: a\ntype: node\nhealthCheck: health\n");
    assert_eq!((e.path(), e.location().line()), ("healthCheck", Some(3)));
    let e = deploy_err("name: a\ntype: node\nhealthCheck: /h\nkeepReleases: many\n");
    assert_eq!(
        e.to_string(),
        "deploy.yml:4:15: keepReleases: expected a whole number, found \"many\""
    );
    let e = deploy_err("name: a\ntype: node\nhealthCheck:\n  path: /h\n  interval: soon\n");
    assert_eq!(
        (e.path(), e.location().line()),
        ("healthCheck.interval", Some(5))
    );
    let e = deploy_err("name: a/b\ntype: node\nhealthCheck: /h\n");
    assert_eq!((e.path(), e.location().line()), ("name", Some(1)));
    let e = deploy_err("name: a\ntype: custom\nhealthCheck: /h\n");
    assert_eq!(e.path(), "command");
    let e = deploy_err("name: a\ntype: node\nhealthCheck: /h\nshared:\n  dirs: [ok, ../etc]\n");
    assert_eq!((e.path(), e.location().line()), ("shared.dirs[1]", Some(5)));
    let e = deploy_err("name: [a\n");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
}

#[test]
fn misspelt_keys_warn_with_a_suggestion() {
    let (_, warnings) = DeployConfig::from_yaml(
        "name: a\ntype: node\nhealthCheck: /h\nhooks:\n  predeploy: ./m.sh\nkeep_releases: 3\n",
        "deploy.yml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let texts: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("deploy.yml:5:3: hooks.predeploy: unknown key"),
        "{texts:?}"
    );
    assert!(texts[0].contains("did you mean preDeploy?"), "{texts:?}");
    assert!(texts[1].contains("did you mean keepReleases?"), "{texts:?}");
}

#[test]
fn variables_are_interpolated() {
    let lookup = |name: &str| (name == "APP").then(|| "billing".to_string());
    let vars = Vars::new(&lookup);
    let (c, _) = DeployConfig::from_yaml_with(
        "name: ${APP}\ntype: node\nhealthCheck: ${HEALTH:-/healthz}\n",
        "deploy.yml",
        &vars,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.name, "billing");
    assert_eq!(c.health_check.path, "/healthz");
    let e = DeployConfig::from_yaml_with(
        "name: a\ntype: node\nhealthCheck: ${NOPE}\n",
        "deploy.yml",
        &vars,
    )
    .err()
    .unwrap_or_else(|| panic!("a missing variable must fail"));
    assert!(
        matches!(e, ConfigError::MissingVariable { ref variable, .. } if variable == "NOPE"),
        "{e}"
    );
    assert_eq!((e.path(), e.location().line()), ("healthCheck", Some(3)));
}

#[test]
fn seed_host_config() {
    let (c, warnings) = HostConfig::from_yaml(
        "\nport: 8000\nmanager: systemd\nenv: production\n",
        "config.yml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty());
    assert_eq!(c.port, 8000);
    assert_eq!(c.manager, ProcessManager::Systemd);
    assert_eq!(c.env, "production");
    let (c, _) = HostConfig::from_yaml(
        "port: 8000\nmanager: systemd  # systemd or pm2\n",
        "config.yml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.env, "production");
    let (c, _) =
        HostConfig::from_yaml("port: 9000\n", "config.yml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.manager, ProcessManager::Builtin);
    let round = HostConfig::from_yaml(&c.to_yaml(), "config.yml").map(|(c, _)| c);
    assert_eq!(round.ok(), Some(c));
    let shipped = HostConfig::from_yaml(include_str!("../../../examples/config.yml"), "config.yml");
    assert!(shipped.is_ok(), "{shipped:?}");
}

#[test]
fn bad_host_configs_are_located() {
    let e = HostConfig::from_yaml("port: 70000\n", "config.yml")
        .err()
        .unwrap_or_else(|| panic!());
    assert_eq!(
        e.to_string(),
        "config.yml:1:7: port: expected a whole number from 0 to 65535, found 70000"
    );
    let e = HostConfig::from_yaml("port: 80\nmanager: supervisord\n", "config.yml")
        .err()
        .unwrap_or_else(|| panic!());
    assert_eq!((e.path(), e.location().line()), ("manager", Some(2)));
    let e = HostConfig::from_yaml("manager: pm2\n", "config.yml")
        .err()
        .unwrap_or_else(|| panic!());
    assert_eq!(e.path(), "port");
}
