//! Deployment: turns an [`ExecutionPlan`] into runnable subtasks — lanes created and wired,
//! operators, sources and sinks instantiated — before any actor starts, so that setup errors
//! (a missing input file, an existing output file) stop the job before it runs.

use crate::barrier::BarrierAligner;
use crate::chain::{ChainNode, Output, Route, SinkTail, Tail};
use crate::clock::ProcessingClock;
use crate::config::JobConfig;
use crate::error::BuildError;
use crate::gate::InputGateBuilder;
use crate::graph::{NodeKind, StreamGraph, StreamNode};
use crate::lane::LaneSender;
use crate::message::{PriorityMessage, StreamMessage};
use crate::metrics::{OperatorCounters, SubtaskMetrics};
use crate::operator::TaskInfo;
use crate::partition::WriterSpec;
use crate::plan::ExecutionPlan;
use crate::subtask::{SourceHead, Subtask};
use crate::types::{EdgeId, NodeId};
use crate::valve::WatermarkValve;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Everything the supervisor needs to run a job.
pub(crate) struct Deployment {
    pub(crate) subtasks: Vec<Subtask>,
    pub(crate) priority: Vec<LaneSender<PriorityMessage>>,
    pub(crate) metrics: Vec<Arc<SubtaskMetrics>>,
}

fn task_info(
    node: &StreamNode,
    plan: &ExecutionPlan,
    config: &JobConfig,
    clock: ProcessingClock,
    counters: OperatorCounters,
    index: usize,
) -> TaskInfo {
    TaskInfo {
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
    index: usize,
    records_out: Arc<AtomicU64>,
    tails: Vec<Tail>,
}

impl ChainBuilder<'_> {
    fn node(&mut self, id: NodeId, input: usize) -> Result<Output, BuildError> {
        let node = &self.graph.nodes[id.0];
        let info = task_info(
            node,
            self.plan,
            self.config,
            self.clock.clone(),
            self.counters.clone(),
            self.index,
        );
        match &node.kind {
            NodeKind::Operator(factory) => {
                let op = factory.create(&info);
                let outputs = self.outputs(id)?;
                Ok(Output::Operator(
                    Box::new(ChainNode {
                        label: node.label(),
                        info,
                        op,
                        outputs,
                        scratch: Vec::new(),
                    }),
                    input,
                ))
            }
            NodeKind::Sink(factory) => {
                let sink = factory.create(&info).map_err(|message| BuildError::Setup {
                    operator: node.label(),
                    message,
                })?;
                self.tails.push(Tail::Sink(SinkTail {
                    label: node.label(),
                    info,
                    sink,
                    work: VecDeque::new(),
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
    let mut out_edges: Vec<Vec<EdgeId>> = vec![Vec::new(); graph.nodes.len()];
    for edge in &graph.edges {
        out_edges[edge.source.0].push(edge.id);
        if plan.chained[edge.id.0] {
            continue;
        }
        let target_vertex = plan.vertex_of[edge.target.0].0;
        let upstream = plan.parallelism[edge.source.0] as usize;
        let mut per_upstream = Vec::with_capacity(upstream);
        for i in 0..upstream {
            let mut channels = Vec::new();
            for j in plan.targets(graph, edge.id, i) {
                if let Some(b) = builders[target_vertex][j].as_mut() {
                    channels.push(b.add_lane(config.lane_capacity));
                    lane_inputs[target_vertex][j].push(edge.input);
                }
            }
            per_upstream.push(channels);
        }
        senders[edge.id.0] = per_upstream;
    }

    let mut deployment = Deployment {
        subtasks: Vec::new(),
        priority: Vec::new(),
        metrics: Vec::new(),
    };
    for vertex in &plan.vertices {
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
                index,
                records_out: records_out.clone(),
                tails: Vec::new(),
            };
            let (source, root) = match &head.kind {
                NodeKind::Source(factory) => {
                    let info =
                        task_info(head, plan, config, clock.clone(), counters.clone(), index);
                    let source = factory.create(&info).map_err(|message| BuildError::Setup {
                        operator: head.label(),
                        message,
                    })?;
                    let root = chain.outputs(head.id)?;
                    (
                        Some(SourceHead {
                            label: head.label(),
                            info,
                            source,
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
            deployment.subtasks.push(Subtask {
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
