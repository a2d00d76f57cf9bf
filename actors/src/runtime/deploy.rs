//! Deployment: turns an [`ExecutionPlan`] into runnable subtasks — lanes created and wired,
//! operators, sources and sinks instantiated — before any actor starts, so that setup errors
//! (a missing input file, an existing output file) stop the job before it runs.

use crate::checkpoint::barrier::BarrierAligner;
use crate::checkpoint::capture::RestorePlan;
use crate::checkpoint::coordinator::{CheckpointingMode, TaskRef};
use crate::checkpoint::fault::FaultPlan;
use crate::dataplane::gate::InputGateBuilder;
use crate::dataplane::lane::LaneSender;
use crate::dataplane::message::{PriorityMessage, StreamMessage};
use crate::dataplane::partition::WriterSpec;
use crate::error::BuildError;
use crate::operators::operator::{Generation, TaskInfo};
use crate::runtime::chain::{ChainNode, Output, Route, SinkTail, Tail};
use crate::runtime::config::JobConfig;
use crate::runtime::control::{CoordinatorLink, CoordinatorMsg};
use crate::runtime::graph::{NodeKind, StreamGraph, StreamNode};
use crate::runtime::metrics::{ChannelSource, OperatorCounters, OutputLaneProbe, SubtaskMetrics};
use crate::runtime::plan::{ExecutionPlan, JobVertex};
use crate::runtime::subtask::Checkpointing;
use crate::runtime::subtask::{SourceHead, Subtask};
use crate::time::clock::ProcessingClock;
use crate::time::valve::WatermarkValve;
use crate::types::{EdgeId, NodeId};
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

/// Everything the supervisor needs to run a job (or one pipelined region of it).
pub(crate) struct Deployment {
    pub(crate) subtasks: Vec<Subtask>,
    /// The pipelined region of each subtask.
    pub(crate) regions: Vec<usize>,
    pub(crate) priority: Vec<LaneSender<PriorityMessage>>,
    pub(crate) metrics: Vec<Arc<SubtaskMetrics>>,
    /// Each subtask as the coordinator knows it: (vertex, index).
    pub(crate) tasks: Vec<TaskRef>,
    /// The source subtasks, which get checkpoint triggers.
    pub(crate) sources: Vec<TaskRef>,
}

/// What a deployment restores and whom it reports checkpoints to.
#[derive(Default)]
pub(crate) struct DeployContext<'a> {
    pub(crate) restore: Option<&'a RestorePlan>,
    pub(crate) coordinator: Option<ActorRef<CoordinatorMsg>>,
    /// The job's pipelined regions and their generations (with checkpointing).
    pub(crate) regions: Option<&'a Regions>,
    /// Deploy only this region (a regional restart); `None` deploys every region.
    pub(crate) only: Option<usize>,
    pub(crate) faults: Option<&'a FaultPlan>,
}

/// The pipelined regions of a job (`ExecutionPlan::regions`) and the current generation of
/// each: bumped when the region restarts, checked before every commit of its subtasks.
#[derive(Debug)]
pub(crate) struct Regions {
    /// The region of each job vertex.
    pub(crate) of_vertex: Vec<usize>,
    pub(crate) generations: Vec<Arc<AtomicU64>>,
}

impl Regions {
    pub(crate) fn new(graph: &StreamGraph, plan: &ExecutionPlan) -> Self {
        let of_vertex = plan.regions(graph);
        let n = of_vertex.iter().max().map_or(0, |m| m + 1);
        Regions {
            of_vertex,
            generations: (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.generations.len()
    }

    fn region(&self, vertex: usize) -> usize {
        self.of_vertex.get(vertex).copied().unwrap_or(0)
    }

    /// The generation handle of a subtask in `region`, at the region's current generation.
    fn generation(&self, region: usize) -> Generation {
        match self.generations.get(region) {
            Some(g) => Generation::new(g.load(std::sync::atomic::Ordering::SeqCst), g.clone()),
            None => Generation::default(),
        }
    }
}

/// An operator's key in checkpoints: its `uid`, or its name and position in the graph.
pub(crate) fn state_key(node: &StreamNode) -> String {
    match &node.uid {
        Some(uid) => uid.to_string(),
        None => format!("{}#{}", node.name, node.id.0),
    }
}

/// Builds the chain of one subtask, depth first from its head.
struct ChainBuilder<'a> {
    graph: &'a StreamGraph,
    plan: &'a ExecutionPlan,
    config: &'a JobConfig,
    clock: ProcessingClock,
    counters: OperatorCounters,
    out_edges: &'a [Vec<EdgeId>],
    senders: &'a mut [Vec<Vec<LaneSender<StreamMessage>>>],
    prio: &'a [Vec<Vec<LaneSender<PriorityMessage>>>],
    restore: Option<&'a RestorePlan>,
    generation: Generation,
    index: usize,
    records_out: Arc<AtomicU64>,
    output_watermark: Arc<AtomicI64>,
    tails: Vec<Tail>,
    wakeup: Arc<tokio::sync::Notify>,
}

impl ChainBuilder<'_> {
    /// Who and where `node`'s instance in this subtask is.
    fn task_info(&self, node: &StreamNode) -> TaskInfo {
        TaskInfo {
            generation: self.generation.clone(),
            checkpointing: self.config.checkpointing.is_some(),
            restored_from: self.restore.map(|r| r.checkpoint),
            wakeup: self.wakeup.clone(),
            counters: self.counters.clone(),
            clock: self.clock.clone(),
            auto_watermark_interval: self.config.auto_watermark_interval,
            runtime_mode: self.config.runtime_mode,
            operator_id: node.id,
            operator_name: node.name.clone(),
            uid: node.uid.clone(),
            subtask_index: self.index,
            parallelism: self.plan.parallelism[node.id.0],
            max_parallelism: self.plan.max_parallelism[node.id.0],
        }
    }

    fn restored(
        &self,
        node: &StreamNode,
        info: &TaskInfo,
    ) -> Result<Option<crate::checkpoint::types::RestoredState>, BuildError> {
        match self.restore {
            Some(r) => r.for_operator(
                &state_key(node),
                self.index,
                info.parallelism,
                info.max_parallelism,
                info.key_group_range(),
            ),
            None => Ok(None),
        }
    }

    fn node(&mut self, id: NodeId, input: usize) -> Result<Output, BuildError> {
        let node = &self.graph.nodes[id.0];
        let info = self.task_info(node);
        match &node.kind {
            NodeKind::Operator(factory) => {
                let op = factory.create(&info);
                let restored = self.restored(node, &info)?;
                let outputs = self.outputs(id)?;
                Ok(Output::Operator(
                    Box::new(ChainNode {
                        label: node.label(),
                        info,
                        op,
                        outputs,
                        scratch: Vec::new(),
                        key: state_key(node),
                        restored,
                        end_pending: false,
                        opened: false,
                    }),
                    input,
                ))
            }
            NodeKind::Sink(factory) => {
                let sink = factory.create(&info).map_err(|message| BuildError::Setup {
                    operator: node.label(),
                    message,
                })?;
                let restored = self.restored(node, &info)?;
                self.tails.push(Tail::Sink(SinkTail {
                    label: node.label(),
                    info,
                    sink,
                    work: VecDeque::new(),
                    key: state_key(node),
                    restored,
                    output_watermark: self.output_watermark.clone(),
                    sides: Vec::new(),
                    sides_ended: false,
                    hold_end: self.config.checkpointing.is_some(),
                    end_held: false,
                    side_scratch: Vec::new(),
                }));
                let at = self.tails.len() - 1;
                // Its side outputs: never chained (see `plan`), so network tails after it.
                let sides = self.outputs(id)?;
                if let Some(Tail::Sink(s)) = self.tails.get_mut(at) {
                    s.sides = sides;
                }
                Ok(Output::Tail(at))
            }
            NodeKind::Source(_) => Err(BuildError::InvalidConfig(format!(
                "{} is a source and cannot have inputs",
                node.label()
            ))),
        }
    }

    fn outputs(&mut self, id: NodeId) -> Result<Vec<Route>, BuildError> {
        let mut outputs = Vec::new();
        for &e in &self.out_edges[id.0] {
            let edge = &self.graph.edges[e.0];
            let tag = edge.output_tag.clone();
            if self.plan.chained[e.0] {
                outputs.push(Route {
                    tag,
                    to: self.node(edge.target, edge.input)?,
                    record_type: Some(edge.writer.record_type()),
                });
            } else {
                let channels = std::mem::take(&mut self.senders[e.0][self.index]);
                let writer = edge.writer.create(WriterSpec {
                    edge: e,
                    partitioning: self.plan.partitioning[e.0],
                    channels,
                    subtask_index: self.index,
                    target_max_parallelism: self.plan.max_parallelism[edge.target.0],
                    batch_size: self.config.batch_size,
                    records_out: self.records_out.clone(),
                });
                self.tails.push(Tail::Network {
                    owner: self.graph.nodes[id.0].label(),
                    writer,
                    priority: self.prio[e.0].get(self.index).cloned().unwrap_or_default(),
                    announce: self.config.checkpointing.as_ref().is_some_and(|c| {
                        c.settings.aligned_timeout.is_some()
                            && c.settings.mode == CheckpointingMode::ExactlyOnce
                    }),
                    overtaken: Vec::new(),
                    output_watermark: self.output_watermark.clone(),
                });
                outputs.push(Route {
                    tag,
                    to: Output::Tail(self.tails.len() - 1),
                    record_type: Some(edge.writer.record_type()),
                });
            }
        }
        Ok(outputs)
    }
}

/// Creates every subtask of `plan` (or of the one region `ctx.only`): first the lanes of every
/// network edge, then each subtask's chain, gate, metrics and checkpointing.
pub(crate) fn deploy(
    graph: &StreamGraph,
    plan: &ExecutionPlan,
    config: &JobConfig,
    clock: ProcessingClock,
    ctx: &DeployContext<'_>,
) -> Result<Deployment, BuildError> {
    let deployer = Deployer {
        graph,
        plan,
        config,
        clock,
        ctx,
    };
    let mut lanes = Lanes::create(graph, plan, config, |v| deployer.deployed(v));
    let mut deployment = Deployment {
        subtasks: Vec::new(),
        regions: Vec::new(),
        priority: Vec::new(),
        metrics: Vec::new(),
        tasks: Vec::new(),
        sources: Vec::new(),
    };
    for vertex in plan.vertices.iter().filter(|v| deployer.deployed(v.id.0)) {
        let region = deployer.region_of(vertex.id.0);
        let generation = ctx
            .regions
            .map_or_else(Default::default, |r| r.generation(region));
        for index in 0..vertex.parallelism as usize {
            let subtask =
                deployer.subtask(&mut lanes, &mut deployment, vertex, index, &generation)?;
            deployment.regions.push(region);
            deployment.subtasks.push(subtask);
        }
    }
    Ok(deployment)
}

/// The lanes of every network (non-chained) edge into a deployed vertex, and what each of
/// their ends still has to pick up.
struct Lanes {
    /// Per vertex, per subtask: its input gate, until the subtask takes it.
    gates: Vec<Vec<Option<InputGateBuilder<StreamMessage, PriorityMessage>>>>,
    /// Per vertex, per subtask: the input number (of a multi-input operator) of each lane.
    lane_inputs: Vec<Vec<Vec<usize>>>,
    /// Per edge, per upstream subtask: the senders of its channels, until its chain takes them.
    senders: Vec<Vec<Vec<LaneSender<StreamMessage>>>>,
    /// Per edge, per upstream subtask: the priority lanes of its channels' receivers.
    priority: Vec<Vec<Vec<LaneSender<PriorityMessage>>>>,
    /// Per node: its output edges.
    out_edges: Vec<Vec<EdgeId>>,
    /// Per vertex, per subtask: where each input lane comes from (vertex, subtask).
    lane_sources: Vec<Vec<Vec<ChannelSource>>>,
    /// Per vertex, per subtask: probes of its output lanes (to vertex, subtask).
    out_probes: Vec<Vec<Vec<OutputLaneProbe>>>,
}

impl Lanes {
    /// Creates one lane per (upstream subtask, downstream subtask) pair that an edge connects,
    /// for every edge into a vertex that `deployed` accepts. Regions are connected
    /// components, so an edge is inside one region, deployed or not.
    fn create(
        graph: &StreamGraph,
        plan: &ExecutionPlan,
        config: &JobConfig,
        deployed: impl Fn(usize) -> bool,
    ) -> Lanes {
        let mut lanes = Lanes {
            gates: plan
                .vertices
                .iter()
                .map(|v| {
                    (0..v.parallelism)
                        .map(|_| Some(InputGateBuilder::new(config.priority_lane_capacity)))
                        .collect()
                })
                .collect(),
            lane_inputs: plan
                .vertices
                .iter()
                .map(|v| vec![Vec::new(); v.parallelism as usize])
                .collect(),
            senders: vec![Vec::new(); graph.edges.len()],
            priority: vec![Vec::new(); graph.edges.len()],
            out_edges: vec![Vec::new(); graph.nodes.len()],
            lane_sources: plan
                .vertices
                .iter()
                .map(|v| vec![Vec::new(); v.parallelism as usize])
                .collect(),
            out_probes: plan
                .vertices
                .iter()
                .map(|v| vec![Vec::new(); v.parallelism as usize])
                .collect(),
        };
        for edge in &graph.edges {
            lanes.out_edges[edge.source.0].push(edge.id);
            let target_vertex = plan.vertex_of[edge.target.0].0;
            if plan.chained[edge.id.0] || !deployed(target_vertex) {
                continue;
            }
            let upstream = plan.parallelism[edge.source.0] as usize;
            let source_vertex = plan.vertex_of[edge.source.0].0;
            let mut per_upstream = Vec::with_capacity(upstream);
            let mut prio_upstream = Vec::with_capacity(upstream);
            for i in 0..upstream {
                let mut channels = Vec::new();
                let mut targets = Vec::new();
                for j in plan.targets(graph, edge.id, i) {
                    if let Some(b) = lanes.gates[target_vertex][j].as_mut() {
                        let sender = b.add_lane(config.lane_capacity);
                        lanes.lane_sources[target_vertex][j].push(ChannelSource {
                            vertex: source_vertex,
                            subtask: i,
                        });
                        if let Some(p) = lanes.out_probes[source_vertex].get_mut(i) {
                            p.push(OutputLaneProbe {
                                vertex: target_vertex,
                                subtask: j,
                                probe: sender.probe(),
                            });
                        }
                        channels.push(sender);
                        targets.push(b.priority_sender());
                        lanes.lane_inputs[target_vertex][j].push(edge.input);
                    }
                }
                per_upstream.push(channels);
                prio_upstream.push(targets);
            }
            lanes.senders[edge.id.0] = per_upstream;
            lanes.priority[edge.id.0] = prio_upstream;
        }
        lanes
    }
}

/// What every subtask of one deployment is built from.
struct Deployer<'a> {
    graph: &'a StreamGraph,
    plan: &'a ExecutionPlan,
    config: &'a JobConfig,
    clock: ProcessingClock,
    ctx: &'a DeployContext<'a>,
}

impl Deployer<'_> {
    fn region_of(&self, vertex: usize) -> usize {
        self.ctx.regions.map_or(0, |r| r.region(vertex))
    }

    fn deployed(&self, vertex: usize) -> bool {
        self.ctx
            .only
            .is_none_or(|only| self.region_of(vertex) == only)
    }

    /// Subtask `index` of `vertex`: its chain (source head, operators, tails), its input gate,
    /// its metrics and its checkpointing. Records the subtask's priority lane, metrics, task
    /// and (for a source) source position in `deployment`.
    fn subtask(
        &self,
        lanes: &mut Lanes,
        deployment: &mut Deployment,
        vertex: &JobVertex,
        index: usize,
        generation: &Generation,
    ) -> Result<Subtask, BuildError> {
        let name: Arc<str> = vertex.name.as_str().into();
        let head = &self.graph.nodes[vertex.head.0];
        let records_out = Arc::new(AtomicU64::new(0));
        let output_watermark = Arc::new(AtomicI64::new(i64::MIN));
        let counters = OperatorCounters::default();
        let wakeup = Arc::new(tokio::sync::Notify::new());
        let mut chain = ChainBuilder {
            wakeup: wakeup.clone(),
            counters: counters.clone(),
            graph: self.graph,
            plan: self.plan,
            config: self.config,
            clock: self.clock.clone(),
            out_edges: &lanes.out_edges,
            senders: &mut lanes.senders,
            prio: &lanes.priority,
            restore: self.ctx.restore,
            generation: generation.clone(),
            index,
            records_out: records_out.clone(),
            output_watermark: output_watermark.clone(),
            tails: Vec::new(),
        };
        let (source, root) = match &head.kind {
            NodeKind::Source(factory) => {
                let info = chain.task_info(head);
                let source = factory.create(&info).map_err(|message| BuildError::Setup {
                    operator: head.label(),
                    message,
                })?;
                let restored = chain.restored(head, &info)?;
                let root = chain.outputs(head.id)?;
                deployment.sources.push((vertex.id.0, index));
                let source = SourceHead {
                    label: head.label(),
                    info,
                    source,
                    key: state_key(head),
                    restored,
                };
                (Some(source), root)
            }
            _ => (None, vec![Route::main(chain.node(head.id, 0)?)]),
        };
        let tails = chain.tails;
        let builder = lanes.gates[vertex.id.0][index].take().ok_or_else(|| {
            BuildError::InvalidConfig(format!("gate of {} deployed twice", vertex.name))
        })?;
        deployment.priority.push(builder.priority_sender());
        let gate = builder.build();
        let lane_count = gate.lane_count();
        let metrics = Arc::new(
            SubtaskMetrics::new(
                name.clone(),
                index,
                vertex.parallelism,
                records_out,
                output_watermark,
                gate.probes(),
                counters,
            )
            .with_lanes(
                std::mem::take(&mut lanes.lane_sources[vertex.id.0][index]),
                std::mem::take(&mut lanes.out_probes[vertex.id.0][index]),
            ),
        );
        deployment.metrics.push(metrics.clone());
        let task = (vertex.id.0, index);
        deployment.tasks.push(task);
        let checkpointing =
            self.checkpointing(head, vertex, index, task, generation, lane_count)?;
        Ok(Subtask {
            checkpointing,
            fault: self.ctx.faults.and_then(|f| f.hook(&name, index)),
            deferred: Vec::new(),
            postponed: Vec::new(),
            vertex: name,
            index,
            parallelism: vertex.parallelism,
            head_label: head.label(),
            source,
            gate,
            lane_inputs: std::mem::take(&mut lanes.lane_inputs[vertex.id.0][index]),
            root,
            tails,
            valve: WatermarkValve::new(lane_count),
            aligner: BarrierAligner::new(lane_count),
            metrics,
            buffer_timeout: self.config.buffer_timeout,
            cancel_timeout: self.config.cancel_timeout,
            clock: self.clock.clone(),
            wakeup,
        })
    }

    /// A subtask's link to the checkpoint coordinator and its restored lane-level state
    /// (input watermarks, in-flight data), if the job checkpoints.
    fn checkpointing(
        &self,
        head: &StreamNode,
        vertex: &JobVertex,
        index: usize,
        task: TaskRef,
        generation: &Generation,
        lanes: usize,
    ) -> Result<Option<Checkpointing>, BuildError> {
        let Some(coordinator) = &self.ctx.coordinator else {
            return Ok(None);
        };
        let head_key = state_key(head);
        let restored = match self.ctx.restore {
            Some(r) => r.for_lanes(&head_key, index, vertex.parallelism, lanes)?,
            None => Default::default(),
        };
        Ok(Some(
            Checkpointing::new(
                CoordinatorLink {
                    task,
                    generation: generation.get(),
                    coordinator: coordinator.clone(),
                },
                head_key,
                self.config
                    .checkpointing
                    .as_ref()
                    .and_then(|c| c.settings.aligned_timeout),
                restored,
            )
            .incremental(
                self.config
                    .checkpointing
                    .as_ref()
                    .is_some_and(|c| c.settings.incremental),
            ),
        ))
    }
}
