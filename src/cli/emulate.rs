//! `fleetsim emulate`: the embedded EZCA, IoT Hub and DPS emulators as a standalone process,
//! for Microsoft's SDKs, other tools and remote-target runs.

use std::path::PathBuf;

use crate::scenario;

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// Address to listen on. Loopback by default: the emulators accept test credentials.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
    /// EZCA HTTPS port.
    #[arg(long, default_value_t = 8443)]
    pub ca_port: u16,
    /// IoT Hub MQTT/TLS port.
    #[arg(long, default_value_t = 8883)]
    pub mqtt_port: u16,
    /// IoT Hub MQTT over WebSocket on a port of its own as well. It is always served on the
    /// registry's port (`/$iothub/websocket`), as IoT Hub serves both on 443.
    #[arg(long)]
    pub websocket_port: Option<u16>,
    /// IoT Hub AMQP/TLS port (C2D sends and the Event Hub-compatible endpoint).
    #[arg(long, default_value_t = 5671)]
    pub amqp_port: u16,
    /// IoT Hub service REST port: the registry, twins, direct methods, statistics and queries
    /// (443 in Azure, fixed in Microsoft's service SDKs).
    #[arg(long, default_value_t = 8445)]
    pub registry_port: u16,
    /// Bind the ports Microsoft's SDKs dial, as in Azure: the hub's 443 (REST, MQTT and AMQP
    /// over WebSocket), 8883 (MQTT) and 5671 (AMQP); DPS's 443 and 8883 on --dps-ip. Ports
    /// below 1024 need root or CAP_NET_BIND_SERVICE.
    #[arg(long, conflicts_with_all = ["registry_port", "mqtt_port", "amqp_port", "dps_port", "dps_service_port"])]
    pub azure_ports: bool,
    /// The hub's host name (in device usernames and SAS tokens).
    #[arg(long, default_value = "fleetsim-hub.azure-devices.net")]
    pub hub_host: String,
    /// Where to write trust.pem, ezca-token, hub-connection-string and target.yaml.
    #[arg(long, default_value = "fleetsim-emulator")]
    pub dir: PathBuf,
    /// Real time per scenario day for issued certificates (e.g. 3s); real days when absent.
    #[arg(long)]
    pub time_scale: Option<String>,
    /// The CA's MaxCertLifeDays.
    #[arg(long, default_value_t = 397)]
    pub max_cert_life_days: u32,
    /// Throttle the hub like this tier (F1, B1, B2, B3, S1, S2, S3).
    #[arg(long)]
    pub sku: Option<crate::iothub::quotas::Sku>,
    /// Hub units of the --sku tier (at most what the tier allows: 1 on F1, 10 on B3/S3, else 200).
    #[arg(long, default_value_t = 1)]
    pub units: u32,
    /// EZCA's "disable device on revoke": a revoked certificate's device is disabled in the hub,
    /// which drops it and refuses its reconnects (off: it stays connected, as IoT Hub alone does).
    #[arg(long)]
    pub disable_device_on_revoke: bool,
    /// Address of DPS's endpoints: an address of its own, because Microsoft's SDKs use port 8883
    /// for DPS as for the hub (map --dps-host to it in /etc/hosts for them).
    #[arg(long, default_value = "127.0.0.2")]
    pub dps_ip: std::net::IpAddr,
    /// DPS MQTT/TLS port.
    #[arg(long, default_value_t = 8883)]
    pub dps_port: u16,
    /// DPS MQTT over WebSocket on a port of its own as well. It is always served on DPS's
    /// service port (`/$iothub/websocket`), as DPS serves both on 443.
    #[arg(long)]
    pub dps_websocket_port: Option<u16>,
    /// DPS service REST API port (enrolment groups, registration records).
    #[arg(long, default_value_t = 8446)]
    pub dps_service_port: u16,
    /// DPS's host name (its server certificate's name, and the name in service SAS tokens).
    #[arg(long, default_value = "fleetsim-dps.azure-devices-provisioning.net")]
    pub dps_host: String,
    /// DPS's id scope (a random 0ne… one when absent).
    #[arg(long)]
    pub dps_id_scope: Option<String>,
    /// Do not start DPS.
    #[arg(long)]
    pub no_dps: bool,
    /// Keep the CA's and the hub's keys, the TLS trust root, the issued certificates, domains,
    /// revocations and the hub's registry in FILE (0600: it holds private keys), so a
    /// restarted `fleetsim emulate` is the same CA and hub to its clients. Created when absent.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

/// `fleetsim emulate`.
pub async fn emulate(mut args: EmulateArgs) -> anyhow::Result<()> {
    use crate::emulator::{Addresses, HubConfig};

    if let Err(e) = crate::rlimit::raise_nofile() {
        eprintln!("fleetsim: warning: cannot raise the open-file limit: {e}");
    }
    if !args.ip.is_loopback() {
        eprintln!(
            "fleetsim: warning: listening on {} (not loopback); anyone who can reach it can get certificates",
            args.ip
        );
    }
    if args.azure_ports {
        (args.registry_port, args.mqtt_port, args.amqp_port) = (443, 8883, 5671);
        (args.dps_service_port, args.dps_port) = (443, 8883);
    }
    let at = |port| std::net::SocketAddr::new(args.ip, port);
    let addrs = Addresses {
        ca: at(args.ca_port),
        hub_mqtt: at(args.mqtt_port),
        hub_registry: at(args.registry_port),
        hub_websocket: args.websocket_port.map(at),
        amqp: at(args.amqp_port),
    };
    let ca = emulated_ca(&args)?;
    let hub = HubConfig {
        host_name: args.hub_host.clone(),
        limits: emulated_hub_limits(&args)?,
        ..HubConfig::default()
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let options = crate::emulator::standalone::Options {
        addrs,
        ca: &ca,
        hub: &hub,
        dps: dps_setup(&args),
        dir: &args.dir,
        token_lifetime_secs: 30 * 86_400,
        state: args.state.as_deref(),
    };
    crate::emulator::standalone::run(options, print_ready, ctrl_c).await?;
    Ok(())
}

fn emulated_ca(args: &EmulateArgs) -> anyhow::Result<crate::emulator::CaConfig> {
    use crate::clock::Clock;
    use anyhow::Context;

    let clock = match &args.time_scale {
        Some(t) => Clock::compressed(
            t.parse::<scenario::Span>()
                .map_err(anyhow::Error::msg)
                .context("--time-scale")?
                .0,
        ),
        None => Clock::real(),
    };
    Ok(crate::emulator::CaConfig {
        clock,
        max_cert_life_days: args.max_cert_life_days,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: args.disable_device_on_revoke,
    })
}

/// `--sku` and `--units` (unlimited without a tier).
fn emulated_hub_limits(
    args: &EmulateArgs,
) -> anyhow::Result<crate::emulator::hub::throttle::HubLimits> {
    use crate::emulator::hub::throttle::HubLimits;

    let Some(sku) = args.sku else {
        return Ok(HubLimits::unlimited());
    };
    let max = sku.limits().max_units;
    if !(1..=max).contains(&args.units) {
        anyhow::bail!("--units {}: {sku} allows 1 to {max}", args.units);
    }
    Ok(HubLimits::for_sku(
        sku,
        args.units,
        std::time::Duration::from_millis(500),
    ))
}

/// DPS's addresses and settings for `fleetsim emulate`, unless --no-dps.
fn dps_setup(
    args: &EmulateArgs,
) -> Option<(crate::emulator::DpsAddresses, crate::emulator::DpsConfig)> {
    if args.no_dps {
        return None;
    }
    let at = |port| std::net::SocketAddr::new(args.dps_ip, port);
    let addrs = crate::emulator::DpsAddresses {
        mqtt: at(args.dps_port),
        websocket: args.dps_websocket_port.map(at),
        service: at(args.dps_service_port),
    };
    let config = crate::emulator::DpsConfig {
        host_name: args.dps_host.clone(),
        id_scope: args.dps_id_scope.clone(),
        ..Default::default()
    };
    Some((addrs, config))
}

/// What `fleetsim emulate` prints once it serves.
fn print_ready(w: &crate::emulator::standalone::Written) {
    println!("EZCA:              {}", w.ca_url);
    for (label, id) in &w.ca_ids {
        println!("  {label:<5} issuing CA: {id}");
    }
    println!(
        "IoT Hub MQTT:      mqtts://{}  (host name {})",
        w.hub_mqtt, w.hub_host
    );
    println!(
        "IoT Hub WebSocket: wss://{}/$iothub/websocket  (subprotocol mqtt, or AMQPWSB10 for AMQP)",
        w.hub_websocket
    );
    println!(
        "IoT Hub registry:  {}  (devices, twins, methods, statistics, query)",
        w.hub_registry_url
    );
    if let Some(d) = &w.dps {
        println!(
            "DPS MQTT:          mqtts://{}  (host name {}, id scope {})",
            d.mqtt, d.host, d.id_scope
        );
        println!("DPS WebSocket:     wss://{}/$iothub/websocket", d.websocket);
        println!("DPS service API:   {}", d.service_url);
        println!(
            "DPS credentials:   {} (0600)",
            d.connection_string_file.display()
        );
    }
    println!(
        "IoT Hub AMQP:      amqps://{}  (C2D, Event Hub-compatible endpoint)",
        w.hub_amqp
    );
    println!(
        "Event Hub endpoint: {} (0600: its connection string)",
        w.event_hub_connection_string_file.display()
    );
    println!(
        "trust bundle:      {}  (TLS root of the emulators' endpoints: clients trust it)",
        w.trust_pem.display()
    );
    println!(
        "device CA root:    {}  (EZCA's root: device certificates chain to it; upload it to a hub)",
        w.device_ca_root.display()
    );
    println!(
        "issuing CA:        {}  (signs device certificates; upload it with `hub upload-ca --ezca`)",
        w.device_ca_issuing.display()
    );
    println!("hub management:    {}", w.management_url);
    println!("EZCA token:        {} (0600)", w.token_file.display());
    println!(
        "hub credentials:   {} (0600)",
        w.connection_string_file.display()
    );
    println!("scenario target:   {}", w.target_yaml.display());
    if let Some(d) = &w.dps {
        println!(
            "  with DPS:        {} (fleet.provisioning: dps)",
            d.target_yaml.display()
        );
    }
    print_hosts(w);
    println!("ready; Ctrl-C stops");
}

/// The /etc/hosts lines Microsoft's SDKs need: they dial the hub's and DPS's names (and check
/// the server certificate against them) on fixed ports.
fn print_hosts(w: &crate::emulator::standalone::Written) {
    println!(
        "for the SDKs:      add to /etc/hosts: {} {}",
        w.hub_mqtt.ip(),
        w.hub_host
    );
    if let Some(d) = &w.dps {
        println!("                   and: {} {}", d.mqtt.ip(), d.host);
    }
}
