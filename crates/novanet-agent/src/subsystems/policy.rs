//! The `policy` subsystem: identities for every pod of the cluster, NetworkPolicy compiled for this
//! node's endpoints, and the diff written to the datapath, on every change of the stores (Pods,
//! Namespaces, NetworkPolicies, Nodes, Services) and of the local endpoints.
//!
//! Ready once the first compile after the stores synced is in the maps. Without object stores (a static
//! light lab without an objects file) it is inactive: nothing is enforced and it says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use novanet_k8s::{ClusterObjects, IdentityApi, KindState, ObjectKind};
use novanet_model::identity::IdentityLabels;
use novanet_model::policy::{Compiled, Incremental, PodView, PolicyInput};
use novanet_model::Endpoint;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Health, Inactive, Subsystem};
use crate::config::AgentConfig;
use crate::endpoint_manager::{EndpointManager, EndpointObserver};
use crate::policy::identities::Allocator;
use crate::policy::snapshot::{PodEntry, Snapshot, identity_labels, namespace_labels_of};
use crate::policy::{AddressBook, PolicyDatapath, PolicyEngine, desired_ipcache, unknown_pod_isolation};

/// Changes closer together than this are compiled once.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// A full recompute at least this often (a missed wake-up never lasts).
const RESYNC: Duration = Duration::from_secs(30);
const IDENTITY_GC_EVERY: Duration = Duration::from_secs(60);
const CT_SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Conntrack this full (of `MAX_CT`) is reported in `status`: the LRU starts forgetting live flows.
const CT_PRESSURE_PERCENT: usize = 90;
/// How long a CNI ADD waits for the compile that judges its endpoint (its Pod must reach the stores).
pub const JUDGED_WAIT: Duration = Duration::from_secs(5);

/// Local endpoints a compile judged (their Pod was in the stores), by address and container.
type Judged = BTreeSet<(Ipv4Addr, String)>;

type Engine = PolicyEngine<Box<dyn PolicyDatapath>>;

/// The last compile, for `novanetctl identity|policy|policy trace`.
pub struct View {
    pub input_policies: Vec<novanet_k8s::k8s_openapi::api::networking::v1::NetworkPolicy>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<PodView>,
    pub identities: BTreeMap<u32, IdentityLabels>,
    pub default_deny: bool,
    pub compiled: Compiled,
    pub took: Duration,
}

impl View {
    pub fn input(&self) -> PolicyInput<'_> {
        PolicyInput {
            policies: &self.input_policies,
            namespaces: &self.namespaces,
            pods: &self.pods,
            identities: &self.identities,
            default_deny: self.default_deny,
        }
    }
}

/// State shared by the compile loop, the endpoint hook and the API.
pub struct Shared {
    engine: Mutex<Engine>,
    /// The compiler kept between compiles: a change redoes only what it can affect.
    compiler: Mutex<Incremental>,
    objects: ClusterObjects,
    manager: Arc<Mutex<EndpointManager>>,
    /// Numbers of the label sets seen so far (the endpoint hook cannot wait for a claim).
    numbers: Mutex<HashMap<IdentityLabels, u32>>,
    view: RwLock<Option<Arc<View>>>,
    health: RwLock<Health>,
    /// The endpoints the last applied compile judged; a CNI ADD waits to appear here.
    judged: tokio::sync::watch::Sender<Arc<Judged>>,
    wake: Notify,
    /// The compile notices last reported (each new one is logged once).
    last_notices: Mutex<Vec<String>>,
    /// Conntrack entries after the last sweep (the map-pressure gauge).
    ct_entries: std::sync::atomic::AtomicUsize,
    default_deny: bool,
    node: String,
    underlay_ip: Option<Ipv4Addr>,
}

impl Shared {
    pub fn view(&self) -> Option<Arc<View>> {
        self.view.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// (allowed, denied) packets of new flows per direction for a local endpoint.
    pub fn verdicts(&self, ip: Ipv4Addr) -> [(u64, u64); 2] {
        let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        engine.maps().verdicts(ip).unwrap_or_default()
    }

    /// Waits (up to `timeout`) until a compile has judged `ep` and its entries are in the maps. `false`
    /// when it did not happen in time: the endpoint then stays isolated until its Pod reaches the stores.
    pub async fn wait_judged(&self, ep: &Endpoint, timeout: Duration) -> bool {
        let key = (ep.ip, ep.attachment.container_id.clone());
        let mut rx = self.judged.subscribe();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|j| j.contains(&key))).await, Ok(Ok(_)))
    }

    fn set_health(&self, health: Health) {
        *self.health.write().unwrap_or_else(PoisonError::into_inner) = health;
    }

    fn pod_labels(&self, ep: &Endpoint) -> Option<IdentityLabels> {
        let pod = novanet_k8s::find_pod(self.objects.pods(), &ep.pod.namespace, &ep.pod.name)?;
        let namespaces = namespace_labels_of(&self.objects, |n| n == ep.pod.namespace);
        Some(identity_labels(&namespaces, &ep.pod.namespace, &novanet_k8s::pod_labels(&pod)))
    }
}

/// The endpoint manager's hook: writes a new endpoint's address before its ADD returns, removes it
/// before its DEL returns, and asks for a recompile.
struct Hook(Arc<Shared>);

impl EndpointObserver for Hook {
    fn added(&self, ep: &Endpoint) {
        let identity = self
            .0
            .pod_labels(ep)
            .and_then(|labels| self.0.numbers.lock().unwrap_or_else(PoisonError::into_inner).get(&labels).copied())
            .unwrap_or(novanet_common::IDENTITY_UNMANAGED);
        let mut engine = self.0.engine.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = engine.endpoint_added(ep.ip, identity) {
            warn!(ip = %ep.ip, error = %e, "policy: could not write the new endpoint's identity");
        }
        drop(engine);
        self.0.wake.notify_one();
    }

    fn removed(&self, ep: &Endpoint) {
        let mut engine = self.0.engine.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = engine.endpoint_removed(ep.ip) {
            warn!(ip = %ep.ip, error = %e, "policy: could not remove the endpoint's policy state");
        }
        drop(engine);
        self.0.wake.notify_one();
    }
}

pub struct Policy {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    ct_sweep: crate::flow_sweep::FlowSweep,
}

pub enum Started {
    Running(Policy),
    Inactive(Inactive),
}

impl Started {
    pub fn shared(&self) -> Option<Arc<Shared>> {
        match self {
            Started::Running(p) => Some(p.shared.clone()),
            Started::Inactive(_) => None,
        }
    }

    pub fn boxed(self) -> Box<dyn Subsystem> {
        match self {
            Started::Running(p) => Box::new(p),
            Started::Inactive(i) => Box::new(i),
        }
    }
}

/// Starts policy when there are object stores; inactive otherwise.
pub fn start(
    cfg: &AgentConfig,
    node: &str,
    objects: Option<ClusterObjects>,
    client: Option<novanet_k8s::kube::Client>,
    manager: Arc<Mutex<EndpointManager>>,
) -> anyhow::Result<Started> {
    let Some(objects) = objects else {
        let mut reason = "no object source (podCIDRSource static without objectsFile): NetworkPolicy is not enforced, all pod traffic is allowed".to_string();
        if cfg.default_deny {
            reason.push_str(" (defaultDeny: true is not enforced)");
        }
        return Ok(Started::Inactive(Inactive::new("policy", reason)));
    };
    let (maps, mut conntrack) = {
        let mut m = manager.lock().unwrap_or_else(PoisonError::into_inner);
        let maps = m.dataplane().policy_maps()?;
        let conntrack = m.dataplane().conntrack()?;
        if let Some(ifname) = cfg.underlay_ip.and_then(interface_with_address) {
            m.dataplane_mut().attach_node_interface(&ifname)?;
            info!(ifname, "node egress program attached (pods' egress after the stack's Service translation)");
        } else {
            warn!("no interface holds the underlay address: egress policy of flows to Service addresses is judged only for local backends");
        }
        (maps, conntrack)
    };
    let engine: Engine = PolicyEngine::new(Box::new(maps), cfg.default_deny);
    let shared = Arc::new(Shared {
        engine: Mutex::new(engine),
        objects,
        manager: manager.clone(),
        numbers: Mutex::new(HashMap::new()),
        view: RwLock::new(None),
        health: RwLock::new(Health::not_ready("waiting for the object stores' first list")),
        judged: tokio::sync::watch::Sender::new(Arc::new(Judged::new())),
        ct_entries: std::sync::atomic::AtomicUsize::new(0),
        last_notices: Mutex::new(Vec::new()),
        compiler: Mutex::new(Incremental::new()),
        wake: Notify::new(),
        default_deny: cfg.default_deny,
        node: node.to_string(),
        underlay_ip: cfg.underlay_ip,
    });
    manager.lock().unwrap_or_else(PoisonError::into_inner).set_observer(Arc::new(Hook(shared.clone())));
    let allocator = match client {
        Some(client) => Allocator::api(IdentityApi::new(client)),
        None => Allocator::local(),
    };
    let allocator = Arc::new(tokio::sync::Mutex::new(allocator));
    let tasks = vec![
        tokio::spawn(compile_loop(shared.clone(), allocator.clone())),
        tokio::spawn(identity_gc(shared.clone(), allocator)),
    ];
    let gauge = shared.clone();
    let ct_sweep = crate::flow_sweep::FlowSweep::start("conntrack-sweep", CT_SWEEP_EVERY, move |now| {
        let removed = conntrack.sweep(now)?;
        gauge.ct_entries.store(conntrack.count()?, std::sync::atomic::Ordering::Relaxed);
        Ok(removed)
    })?;
    Ok(Started::Running(Policy { shared, tasks, ct_sweep }))
}

/// The interface (in the agent's namespace) that holds `ip`.
fn interface_with_address(ip: Ipv4Addr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        if let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in())
            && sin.ip() == ip
        {
            return Some(ifa.interface_name);
        }
    }
    None
}

async fn compile_loop(shared: Arc<Shared>, allocator: Arc<tokio::sync::Mutex<Allocator>>) {
    if let Err(e) = shared.objects.wait_synced().await {
        shared.set_health(Health::not_ready(format!("object stores: {e}")));
        return;
    }
    let mut generation = shared.objects.generation();
    loop {
        let started = Instant::now();
        match recompute(&shared, &allocator).await {
            Ok(health) => shared.set_health(health),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "policy compile failed; the maps keep their last state");
                shared.set_health(Health::not_ready(format!("compile failed: {e:#}")));
            }
        }
        tracing::debug!(took = ?started.elapsed(), "policy compiled");
        // Store changes come in bursts (a relist, a rollout): coalesced. An endpoint change is compiled at
        // once: its CNI ADD waits for it.
        tokio::select! {
            _ = generation.changed() => tokio::time::sleep(DEBOUNCE).await,
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

async fn identity_gc(shared: Arc<Shared>, allocator: Arc<tokio::sync::Mutex<Allocator>>) {
    loop {
        tokio::time::sleep(IDENTITY_GC_EVERY).await;
        let Some(view) = shared.view() else { continue };
        let in_use: BTreeSet<u32> = view.pods.iter().map(|p| p.identity).collect();
        match allocator.lock().await.collect_garbage(&in_use).await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "identities garbage-collected"),
            Err(e) => warn!(error = %format!("{e:#}"), "identity garbage collection failed"),
        }
        shared.numbers.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, n| in_use.contains(n));
    }
}

/// One compile: read the stores and the endpoints, number the label sets, compile, diff, write.
async fn recompute(shared: &Shared, allocator: &tokio::sync::Mutex<Allocator>) -> anyhow::Result<Health> {
    let started = Instant::now();
    let snapshot = Snapshot::read(&shared.objects);
    let local_eps: Vec<Endpoint> =
        shared.manager.lock().unwrap_or_else(PoisonError::into_inner).table().iter().cloned().collect();
    let local_ips: BTreeSet<Ipv4Addr> = local_eps.iter().map(|e| e.ip).collect();
    // Local endpoints take their address from the endpoint table (a new pod's status lags behind its
    // ADD), their labels from the store.
    let mut entries: Vec<PodEntry> = snapshot.pods.iter().filter(|p| !local_ips.contains(&p.ip)).cloned().collect();
    for ep in &local_eps {
        let Some(pod) = novanet_k8s::find_pod(shared.objects.pods(), &ep.pod.namespace, &ep.pod.name) else { continue };
        if let Some(mut entry) = crate::policy::snapshot::pod_entry_at(&pod, &snapshot.namespaces, ep.ip) {
            entry.ip = ep.ip;
            entries.push(entry);
        }
    }
    let mut notes = Vec::new();
    let mut numbers: HashMap<IdentityLabels, u32> = HashMap::new();
    {
        let mut alloc = allocator.lock().await;
        for e in &entries {
            if numbers.contains_key(&e.identity_labels) {
                continue;
            }
            match alloc.number(&e.identity_labels).await {
                Ok(n) => {
                    numbers.insert(e.identity_labels.clone(), n);
                }
                Err(err) => notes.push(format!("identity for {}/{}: {err:#}", e.namespace, e.name)),
            }
        }
    }
    shared.numbers.lock().unwrap_or_else(PoisonError::into_inner).extend(numbers.iter().map(|(k, v)| (k.clone(), *v)));
    let pods: Vec<PodView> = entries
        .iter()
        .filter_map(|e| {
            let identity = *numbers.get(&e.identity_labels)?;
            Some(crate::policy::snapshot::pod_view(e, identity))
        })
        .collect();
    let identities: BTreeMap<u32, IdentityLabels> = numbers.iter().map(|(k, v)| (*v, k.clone())).collect();
    let local: Vec<Ipv4Addr> = local_ips.iter().copied().collect();
    let input = PolicyInput {
        policies: &snapshot.policies,
        namespaces: &snapshot.namespaces,
        pods: &pods,
        identities: &identities,
        default_deny: shared.default_deny,
    };
    let mut compiler = shared.compiler.lock().unwrap_or_else(PoisonError::into_inner);
    let stats = compiler.update(&input, &local);
    let compiled = compiler.compiled();
    let lowered = compiler.entries();
    let pod_ips: BTreeMap<Ipv4Addr, u32> = pods.iter().map(|p| (p.ip, p.identity)).collect();
    let own: Vec<Ipv4Addr> =
        snapshot.nodes.get(&shared.node).cloned().unwrap_or_default().into_iter().chain(shared.underlay_ip).collect();
    let others: Vec<Ipv4Addr> =
        snapshot.nodes.iter().filter(|(n, _)| **n != shared.node).flat_map(|(_, ips)| ips.iter().copied()).collect();
    let policy_namespaces: BTreeSet<&str> =
        snapshot.policies.iter().map(|p| p.metadata.namespace.as_deref().unwrap_or("default")).collect();
    let unknown: BTreeMap<Ipv4Addr, u32> = local_eps
        .iter()
        .filter(|e| !pod_ips.contains_key(&e.ip))
        .map(|e| {
            let has_policies = policy_namespaces.contains(e.pod.namespace.as_str());
            (e.ip, unknown_pod_isolation(has_policies, shared.default_deny))
        })
        .collect();
    let ipcache = desired_ipcache(&AddressBook {
        pods: &pod_ips,
        local: &local_ips,
        isolation: &lowered.isolation,
        unknown: &unknown,
        own_node_ips: &own,
        other_node_ips: &others,
        service_ips: &snapshot.service_ips,
        default_deny: shared.default_deny,
    });
    let report = {
        let mut engine = shared.engine.lock().unwrap_or_else(PoisonError::into_inner);
        engine.apply_entries(&ipcache, lowered)
    };
    drop(compiler);
    // A CNI ADD waits for its pod's labels only while the Pod source can deliver them.
    let pods_healthy = shared.objects.health(ObjectKind::Pod).state(std::time::SystemTime::now()) == KindState::Healthy;
    let judged: Judged = local_eps
        .iter()
        .filter(|e| !pods_healthy || pod_ips.contains_key(&e.ip))
        .map(|e| (e.ip, e.attachment.container_id.clone()))
        .collect();
    shared.judged.send_if_modified(|j| {
        let changed = **j != judged;
        if changed {
            *j = Arc::new(judged);
        }
        changed
    });
    if report.upserts + report.removals > 0 {
        info!(
            upserts = report.upserts,
            removals = report.removals,
            policies_parsed = stats.policies_parsed,
            endpoints_compiled = stats.endpoints_compiled,
            took = ?started.elapsed(),
            "policy applied"
        );
    }
    for e in &report.errors {
        warn!(error = %e, "policy map update failed; the endpoint fails closed");
    }
    notes.extend(report.errors.iter().map(|e| format!("datapath: {e} (affected endpoints deny what the missing entries would allow)")));
    let notices: Vec<String> = compiled.notices.iter().map(notice_text).collect();
    {
        let mut last = shared.last_notices.lock().unwrap_or_else(PoisonError::into_inner);
        for n in notices.iter().filter(|n| !last.contains(n)) {
            warn!(notice = %n, "NetworkPolicy problem: the bad part allows nothing, the rest applies");
        }
        *last = notices.clone();
    }
    notes.extend(notices);
    let view = View {
        input_policies: snapshot.policies,
        namespaces: snapshot.namespaces,
        pods,
        identities,
        default_deny: shared.default_deny,
        compiled,
        took: started.elapsed(),
    };
    *shared.view.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(view));
    Ok(Health::ready_with(notes))
}

#[tonic::async_trait]
impl Subsystem for Policy {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn health(&self) -> Health {
        let mut health = self.shared.health.read().unwrap_or_else(PoisonError::into_inner).clone();
        let entries = self.shared.ct_entries.load(std::sync::atomic::Ordering::Relaxed);
        let max = novanet_common::MAX_CT as usize;
        if entries * 100 >= max * CT_PRESSURE_PERCENT {
            health.reasons.push(format!("conntrack under pressure: {entries} of {max} entries in use (the oldest flows are forgotten first)"));
        }
        health
    }

    async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.ct_sweep.stop();
        // The maps stay: the datapath keeps enforcing the last compiled policy while no agent runs.
    }
}

/// One line for a compile notice: which policy, where in it, what is wrong.
pub fn notice_text(n: &novanet_model::policy::Notice) -> String {
    format!("policy {} ({}): {}", n.policy, n.location, n.message)
}
