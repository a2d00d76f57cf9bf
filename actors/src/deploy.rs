//! Deployment: turns an [`ExecutionPlan`] into runnable subtasks — lanes created and wired,
//! operators, sources and sinks instantiated — before any actor starts, so that setup errors
//! (a missing input file, an existing output file) stop the job before it runs.

use crate::barrier::BarrierAligner;
use crate::chain::{ChainNode, Output, Route, SinkTail, Tail};
use crate::checkpointing::{CoordinatorLink, CoordinatorMsg, RestorePlan};
use crate::clock::ProcessingClock;
use crate::config::JobConfig;
use crate::coordinator::{CheckpointingMode, TaskRef};
use crate::error::BuildError;
use crate::fault::FaultPlan;
use crate::gate::InputGateBuilder;
use crate::graph::{NodeKind, StreamGraph, StreamNode};
use crate::lane::LaneSender;
use crate::message::{PriorityMessage, StreamMessage};
use crate::metrics::{OperatorCounters, SubtaskMetrics};
use crate::operator::TaskInfo;
use crate::partition::WriterSpec;
use crate::plan::ExecutionPlan;
use crate::subtask::Checkpointing;
use crate::subtask::{SourceHead, Subtask};
use crate::types::{EdgeId, NodeId};
use crate::valve::WatermarkValve;
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

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
    fn generation(&self, region: usize) -> crate::operator::Generation {
        match self.generations.get(region) {
            Some(g) => crate::operator::Generation::new(
                g.load(std::sync::atomic::Ordering::SeqCst),
                g.clone(),
            ),
            None => crate::operator::Generation::default(),
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

fn task_info(
    node: &StreamNode,
    plan: &ExecutionPlan,
    config: &JobConfig,
    clock: ProcessingClock,
    counters: OperatorCounters,
    index: usize,
    generation: crate::operator::Generation,
) -> TaskInfo {
    TaskInfo {
        generation,
        checkpointing: config.checkpointing.is_some(),
        counters,
        clock,
        auto_watermark_interval: config.auto_watermark_interval,
        runtime_mode: config.runtime_mode,
        operator_id: node.id,
        operator_name: node.name.clone(),
        uid: node.uid.clone(),
        subtask_index: index,
        parallelism: plan.parallelism[node.id.0],
        max_parallelism: plan.max_parallelism[node.id.0],
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
    generation: crate::operator::Generation,
    index: usize,
    records_out: Arc<AtomicU64>,
    tails: Vec<Tail>,
}

impl ChainBuilder<'_> {
    fn restored(
        &self,
        node: &StreamNode,
        info: &TaskInfo,
    ) -> Result<Option<crate::checkpoint::RestoredState>, BuildError> {
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
        let info = task_info(
            node,
            self.plan,
            self.config,
            self.clock.clone(),
            self.counters.clone(),
            self.index,
            self.generation.clone(),
        );
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
                }));
                Ok(Output::Tail(self.tails.len() - 1))
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
                });
                outputs.push(Route {
                    tag,
                    to: Output::Tail(self.tails.len() - 1),
                });
            }
        }
        Ok(outputs)
    }
}

/// Creates every subtask of `plan`.
pub(crate) fn deploy(
    graph: &StreamGraph,
    plan: &ExecutionPlan,
    config: &JobConfig,
    clock: ProcessingClock,
    ctx: &DeployContext<'_>,
) -> Result<Deployment, BuildError> {
    let mut builders: Vec<Vec<Option<InputGateBuilder<StreamMessage, PriorityMessage>>>> = plan
        .vertices
        .iter()
        .map(|v| {
            (0..v.parallelism)
                .map(|_| Some(InputGateBuilder::new(config.priority_lane_capacity)))
                .collect()
        })
        .collect();
    let mut lane_inputs: Vec<Vec<Vec<usize>>> = plan
        .vertices
        .iter()
        .map(|v| vec![Vec::new(); v.parallelism as usize])
        .collect();
    let mut senders: Vec<Vec<Vec<LaneSender<StreamMessage>>>> = vec![Vec::new(); graph.edges.len()];
    let mut prio: Vec<Vec<Vec<LaneSender<PriorityMessage>>>> = vec![Vec::new(); graph.edges.len()];
    let mut out_edges: Vec<Vec<EdgeId>> = vec![Vec::new(); graph.nodes.len()];
    let region_of = |vertex: usize| ctx.regions.map_or(0, |r| r.region(vertex));
    let deployed = |vertex: usize| ctx.only.is_none_or(|only| region_of(vertex) == only);
    for edge in &graph.edges {
        out_edges[edge.source.0].push(edge.id);
        let target_vertex = plan.vertex_of[edge.target.0].0;
        // Regions are connected components: an edge is inside one, deployed or not.
        if plan.chained[edge.id.0] || !deployed(target_vertex) {
            continue;
        }
        let upstream = plan.parallelism[edge.source.0] as usize;
        let mut per_upstream = Vec::with_capacity(upstream);
        let mut prio_upstream = Vec::with_capacity(upstream);
        for i in 0..upstream {
            let mut channels = Vec::new();
            let mut targets = Vec::new();
            for j in plan.targets(graph, edge.id, i) {
                if let Some(b) = builders[target_vertex][j].as_mut() {
                    channels.push(b.add_lane(config.lane_capacity));
                    targets.push(b.priority_sender());
                    lane_inputs[target_vertex][j].push(edge.input);
                }
            }
            per_upstream.push(channels);
            prio_upstream.push(targets);
        }
        senders[edge.id.0] = per_upstream;
        prio[edge.id.0] = prio_upstream;
    }

    let mut deployment = Deployment {
        subtasks: Vec::new(),
        regions: Vec::new(),
        priority: Vec::new(),
        metrics: Vec::new(),
        tasks: Vec::new(),
        sources: Vec::new(),
    };
    for vertex in &plan.vertices {
        if !deployed(vertex.id.0) {
            continue;
        }
        let region = region_of(vertex.id.0);
        let generation = ctx
            .regions
            .map_or_else(Default::default, |r| r.generation(region));
        let name: Arc<str> = vertex.name.as_str().into();
        let head = &graph.nodes[vertex.head.0];
        for index in 0..vertex.parallelism as usize {
            let records_out = Arc::new(AtomicU64::new(0));
            let counters = OperatorCounters::default();
            let mut chain = ChainBuilder {
                counters: counters.clone(),
                graph,
                plan,
                config,
                clock: clock.clone(),
                out_edges: &out_edges,
                senders: &mut senders,
                prio: &prio,
                restore: ctx.restore,
                generation: generation.clone(),
                index,
                records_out: records_out.clone(),
                tails: Vec::new(),
            };
            let (source, root) = match &head.kind {
                NodeKind::Source(factory) => {
                    let info = task_info(
                        head,
                        plan,
                        config,
                        clock.clone(),
                        counters.clone(),
                        index,
                        generation.clone(),
                    );
                    let source = factory.create(&info).map_err(|message| BuildError::Setup {
                        operator: head.label(),
                        message,
                    })?;
                    let restored = chain.restored(head, &info)?;
                    let root = chain.outputs(head.id)?;
                    deployment.sources.push((vertex.id.0, index));
                    (
                        Some(SourceHead {
                            label: head.label(),
                            info,
                            source,
                            key: state_key(head),
                            restored,
                        }),
                        root,
                    )
                }
                _ => (None, vec![Route::main(chain.node(head.id, 0)?)]),
            };
            let tails = chain.tails;
            let builder = builders[vertex.id.0][index].take().ok_or_else(|| {
                BuildError::InvalidConfig(format!("gate of {} deployed twice", vertex.name))
            })?;
            deployment.priority.push(builder.priority_sender());
            let gate = builder.build();
            let lanes = gate.lane_count();
            let metrics = Arc::new(SubtaskMetrics::new(
                name.clone(),
                index,
                vertex.parallelism,
                records_out,
                gate.probes(),
                counters,
            ));
            deployment.metrics.push(metrics.clone());
            let task = (vertex.id.0, index);
            deployment.tasks.push(task);
            let checkpointing = match &ctx.coordinator {
                Some(coordinator) => {
                    let head_key = state_key(head);
                    let restored = match ctx.restore {
                        Some(r) => r.for_lanes(&head_key, index, vertex.parallelism, lanes)?,
                        None => Default::default(),
                    };
                    Some(Checkpointing::new(
                        CoordinatorLink {
                            task,
                            generation: generation.get(),
                            coordinator: coordinator.clone(),
                        },
                        head_key,
                        config
                            .checkpointing
                            .as_ref()
                            .and_then(|c| c.settings.aligned_timeout),
                        restored,
                    ))
                }
                None => None,
            };
            deployment.regions.push(region);
            deployment.subtasks.push(Subtask {
                checkpointing,
                fault: ctx.faults.and_then(|f| f.hook(&name, index)),
                deferred: Vec::new(),
                vertex: name.clone(),
                index,
                parallelism: vertex.parallelism,
                head_label: head.label(),
                source,
                gate,
                lane_inputs: std::mem::take(&mut lane_inputs[vertex.id.0][index]),
                root,
                tails,
                valve: WatermarkValve::new(lanes),
                aligner: BarrierAligner::new(lanes),
                metrics,
                buffer_timeout: config.buffer_timeout,
                cancel_timeout: config.cancel_timeout,
                clock: clock.clone(),
            });
        }
    }
    Ok(deployment)
}
