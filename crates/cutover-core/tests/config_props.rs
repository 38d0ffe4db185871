//! Properties of the configuration reader: it never panics on any input,
//! every error it reports is located, and values survive interpolation and
//! printing unchanged.

use cutover_core::config::values::{Duration, TimeOfDay};
use cutover_core::config::{ConfigError, DeployConfig, DeploymentConfig, Location, Vars};
use proptest::prelude::*;

fn located(e: &ConfigError) -> bool {
    match e.location() {
        Location::File { line, column, .. } => *line >= 1 && *column >= 1,
        Location::Override { variable } => !variable.is_empty(),
    }
}

/// Text that looks like YAML configuration: keys, indentation, scalars,
/// lists, quotes, variables.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("environments:".to_string()),
        Just("production:".to_string()),
        Just("  ".to_string()),
        Just("\n".to_string()),
        Just("- ".to_string()),
        Just("\"".to_string()),
        Just(": ".to_string()),
        Just("deployment_window:".to_string()),
        Just("start_time: \"25:61\"".to_string()),
        Just("max_concurrent_deployments: lots".to_string()),
        Just("${X}".to_string()),
        Just("${Y:-3}".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("[".to_string()),
        Just("{".to_string()),
        Just("<<: ".to_string()),
        "[a-z_]{1,12}",
        "[0-9]{1,4}",
    ];
    prop::collection::vec(token, 0..60).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(text in "\\PC{0,200}") {
        if let Err(e) = DeploymentConfig::from_yaml(&text, "f.yaml") {
            prop_assert!(located(&e), "{e}");
        }
        if let Err(e) = DeployConfig::from_yaml(&text, "deploy.yml") {
            prop_assert!(located(&e), "{e}");
        }
    }

    #[test]
    fn yaml_like_text_never_panics_and_errors_are_located(text in yamlish()) {
        let lookup = |name: &str| (name == "X").then(|| "1".to_string());
        let vars = Vars::new(&lookup);
        match DeploymentConfig::from_yaml_with(&text, "f.yaml", &vars) {
            Ok((_, warnings)) => {
                for w in warnings {
                    prop_assert!(w.location.line().is_some_and(|l| l >= 1), "{w}");
                }
            }
            Err(e) => prop_assert!(located(&e), "{e}"),
        }
    }

    #[test]
    fn interpolated_strings_arrive_unchanged(value in prop_oneof![
        "[ -~]{1,40}",
        // text YAML would otherwise read as null, a bool or a number
        prop::sample::select(vec!["~", "null", "NULL", "true", "no", "0x1f", "1e3", ".inf", "-0"])
            .prop_map(str::to_string),
    ]) {
        let lookup = |name: &str| (name == "ORG").then(|| value.clone());
        let vars = Vars::new(&lookup);
        let (config, _) = DeploymentConfig::from_yaml_with("global:\n  organization: ${ORG}\n", "f.yaml", &vars)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(config.global.organization.as_deref(), Some(value.as_str()));
    }

    #[test]
    fn durations_print_and_parse_back(ms in 0u64..10_000_000_000) {
        let d = Duration::from_millis(ms);
        let back: Duration = d.to_string().parse().map_err(TestCaseError::fail)?;
        prop_assert_eq!(back, d);
    }

    #[test]
    fn times_of_day_are_exactly_the_valid_ones(h in 0u32..40, m in 0u32..80) {
        let parsed = format!("{h:02}:{m:02}").parse::<TimeOfDay>();
        prop_assert_eq!(parsed.is_ok(), h < 24 && m < 60);
        if let Ok(t) = parsed {
            prop_assert_eq!(t.minutes(), h * 60 + m);
        }
    }
}

#[test]
fn absurd_nesting_is_refused_not_overflowed() {
    for depth in [100, 100_000] {
        let text = format!("a: {}{}", "[".repeat(depth), "]".repeat(depth));
        let e = DeploymentConfig::from_yaml(&text, "deep.yaml")
            .err()
            .unwrap_or_else(|| panic!("nesting {depth} deep must be refused"));
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert_eq!(e.location().line(), Some(1));
    }
}
