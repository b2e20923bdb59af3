//! The starting scenarios `fleetsim init` writes (`scenarios/templates/*.yaml`, embedded in the
//! binary): each one commented, valid, and (but the remote one) runnable as it is against the
//! embedded emulators.

use super::schema::MODELINE;

/// One starting scenario.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// The name `--template` takes.
    pub name: &'static str,
    /// What it is for, in one line (`fleetsim init --help`).
    pub summary: &'static str,
    /// Whether it runs against the embedded emulators (the remote one needs real services and
    /// their secrets).
    pub embedded: bool,
    text: &'static str,
}

/// Every template, `quickstart` (the default) first.
pub const TEMPLATES: [Template; 6] = [
    Template {
        name: "quickstart",
        summary: "100 devices: enrol, connect, telemetry, one renewal (30 s)",
        embedded: true,
        text: include_str!("../../scenarios/templates/quickstart.yaml"),
    },
    Template {
        name: "ca-load",
        summary: "enrolments ramping past a modelled CA's capacity (20 s)",
        embedded: true,
        text: include_str!("../../scenarios/templates/ca-load.yaml"),
    },
    Template {
        name: "renewal-soak",
        summary: "compressed certificate lifetimes, many renewals and swaps (25 s)",
        embedded: true,
        text: include_str!("../../scenarios/templates/renewal-soak.yaml"),
    },
    Template {
        name: "fleet-commands",
        summary: "direct methods, desired properties, queries, C2D messages (25 s)",
        embedded: true,
        text: include_str!("../../scenarios/templates/fleet-commands.yaml"),
    },
    Template {
        name: "dps",
        summary: "devices provisioned through DPS onto two hubs (20 s)",
        embedded: true,
        text: include_str!("../../scenarios/templates/dps.yaml"),
    },
    Template {
        name: "remote-azure",
        summary: "the real EZCA and Azure IoT Hub, with the secrets a run needs (2 min)",
        embedded: false,
        text: include_str!("../../scenarios/templates/remote-azure.yaml"),
    },
];

impl Template {
    /// The template called `name`.
    pub fn named(name: &str) -> Option<&'static Template> {
        TEMPLATES.iter().find(|t| t.name == name)
    }

    /// The scenario as `fleetsim init` writes it: its first line points the editor at the
    /// schema written beside it (in the repository, the templates point one folder up).
    pub fn scenario_text(&self) -> String {
        let body = self.text.split_once('\n').map_or("", |(_, rest)| rest);
        format!("{MODELINE}\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_point_at_the_schema_and_are_named_as_their_files() {
        for t in TEMPLATES {
            assert!(
                t.text
                    .starts_with("# yaml-language-server: $schema=../fleetsim.schema.json\n"),
                "{}",
                t.name
            );
            let text = t.scenario_text();
            assert!(text.starts_with(&format!("{MODELINE}\n#")), "{}", t.name);
            assert!(
                text.contains(&format!("\nname: {}\n", t.name)),
                "{}",
                t.name
            );
        }
        assert_eq!(Template::named("dps").map(|t| t.name), Some("dps"));
        assert!(Template::named("nope").is_none());
    }
}
