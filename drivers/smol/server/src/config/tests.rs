//! The defaults are written twice (the engine's `Config::default`, the flags
//! here) and documented once (README): these tests keep the three in step.

use super::*;
use clap::Command;

#[test]
fn flag_defaults_are_the_engine_defaults() {
    assert_eq!(ServeArgs::defaults().engine_config(), Config::default());
}

/// `(variable, default)` of every row of the README's settings tables.
fn readme_defaults() -> Vec<(String, String)> {
    include_str!("../../../../../README.md")
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let default = cells.next()?;
            name.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'_')
                .then(|| (name.to_string(), default.to_string()))
        })
        .collect()
}

#[test]
fn the_readme_documents_every_setting_with_its_default() {
    let documented = readme_defaults();
    let cmd = ServeArgs::augment_args(Command::new("serve"));
    let mut seen = 0;
    for arg in cmd.get_arguments() {
        let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        let row = documented.iter().find(|(n, _)| n == env);
        let Some((_, readme)) = row else {
            panic!("{env} is not in the README's settings tables");
        };
        match arg.get_default_values() {
            [d] => assert_eq!(readme, d.to_str().unwrap_or(""), "{env}"),
            _ => assert!(
                !readme.starts_with(|c: char| c.is_ascii_digit()),
                "{env} has no default but the README gives {readme}"
            ),
        }
        seen += 1;
    }
    assert!(seen >= 30, "only {seen} settings found");
    for (name, _) in &documented {
        let known = cmd
            .get_arguments()
            .any(|a| a.get_env().and_then(|e| e.to_str()) == Some(name.as_str()));
        assert!(known, "the README documents {name}, which is no setting");
    }
}

#[test]
fn cluster_flag_defaults_are_the_engine_defaults() {
    let mut a = ServeArgs::defaults();
    a.redis_url = Some("redis://127.0.0.1:6379".into());
    a.instance_url = Some("http://10.0.0.5:8080".into());
    a.instance_id = Some("inst-a".into());
    let c = a.cluster().expect("valid").expect("several instances");
    assert_eq!(c.engine, ClusterConfig::new("inst-a", RemoteRoute::Forward));
}

#[test]
fn the_readme_lists_every_caller_error_with_its_status() {
    let readme = include_str!("../../../../../README.md");
    for e in osaurus_relay_engine::CallError::ALL {
        let row = format!("| {} | `{}` |", e.status(), e.code());
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}

#[test]
fn on_fly_the_client_ip_is_fly_client_ip_unless_a_header_is_set() {
    let mut a = ServeArgs::defaults();
    assert_eq!(a.engine_config().client_ip, ClientIpSource::Peer);
    a.fly_app_name = Some("relay".into());
    let fly = ClientIpSource::Header("fly-client-ip".into());
    assert_eq!(a.engine_config().client_ip, fly);
    a.client_ip_header = Some("x-real-ip".into());
    let own = ClientIpSource::Header("x-real-ip".into());
    assert_eq!(a.engine_config().client_ip, own);
}
