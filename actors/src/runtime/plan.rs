//! From stream graph to execution plan: validation, parallelism, default partitioners and
//! chaining. A pure function over plain data, tested without actors.
//!
//! An edge is **chained** (its two operators share a subtask and records pass by function
//! call, not through a lane) when, as in Flink's `isChainable`:
//! chaining is enabled; the partitioning is forward; both sides have the same parallelism; the
//! target has exactly one input edge; the target's strategy is `Always`; the source's strategy
//! is not `Never`. An edge out of a sink (its side output) is never chained.

use crate::dataplane::partition::Partitioning;
use crate::error::BuildError;
use crate::runtime::config::{JobConfig, RuntimeMode};
use crate::runtime::graph::{ChainingStrategy, NodeKind, StreamGraph, StreamNode};
use crate::state::keygroup::{UPPER_BOUND_MAX_PARALLELISM, default_max_parallelism};
use crate::types::{EdgeId, NodeId, VertexId};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// A chain of operators that runs as one subtask per parallel instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobVertex {
    /// Its id: its index in [`ExecutionPlan::vertices`].
    pub id: VertexId,
    /// The chain's first operator.
    pub head: NodeId,
    /// Every operator of the chain, head first, in breadth-first order.
    pub nodes: Vec<NodeId>,
    /// The parallelism shared by the chain.
    pub parallelism: u32,
    /// Display name: the operator names joined with ` -> `.
    pub name: String,
    /// Edges from other vertices into this one (they become input lanes), by edge id.
    pub inputs: Vec<EdgeId>,
}

/// The resolved job: what runs where.
#[derive(Debug, Clone)]
pub struct ExecutionPlan {
    /// Parallelism of each node.
    pub parallelism: Vec<u32>,
    /// Max parallelism (number of key groups) of each node.
    pub max_parallelism: Vec<u32>,
    /// Resolved partitioning of each edge.
    pub partitioning: Vec<Partitioning>,
    /// Whether each edge is chained.
    pub chained: Vec<bool>,
    /// The job vertices.
    pub vertices: Vec<JobVertex>,
    /// The vertex of each node.
    pub vertex_of: Vec<VertexId>,
}

impl ExecutionPlan {
    /// The **pipelined region** of each job vertex: the connected components of the job
    /// graph (every edge is pipelined), numbered from 0 in the order of their first vertex.
    /// A failure restarts only the failed vertex's region; the others keep running.
    pub fn regions(&self, graph: &StreamGraph) -> Vec<usize> {
        let n = self.vertices.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(parent: &mut [usize], mut v: usize) -> usize {
            while parent[v] != v {
                parent[v] = parent[parent[v]];
                v = parent[v];
            }
            v
        }
        for e in &graph.edges {
            let (a, b) = (self.vertex_of[e.source.0].0, self.vertex_of[e.target.0].0);
            let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
            if ra != rb {
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
        let mut number = vec![usize::MAX; n];
        let mut next = 0;
        (0..n)
            .map(|v| {
                let r = root(&mut parent, v);
                if number[r] == usize::MAX {
                    number[r] = next;
                    next += 1;
                }
                number[r]
            })
            .collect()
    }

    /// The downstream subtasks that upstream subtask `index` of `edge` sends to.
    pub fn targets(&self, graph: &StreamGraph, edge: EdgeId, index: usize) -> Range<usize> {
        let e = &graph.edges[edge.0];
        let up = self.parallelism[e.source.0] as usize;
        let down = self.parallelism[e.target.0] as usize;
        match self.partitioning[edge.0] {
            p if p.is_pointwise() => pointwise_targets(up, down, index),
            _ => 0..down,
        }
    }

    /// A one-line-per-vertex description, e.g. for logs.
    pub fn describe(&self, graph: &StreamGraph) -> String {
        let mut s = String::new();
        for v in &self.vertices {
            s.push_str(&format!(
                "[{}] {} (parallelism {})",
                v.id, v.name, v.parallelism
            ));
            for e in &v.inputs {
                let edge = &graph.edges[e.0];
                s.push_str(&format!(
                    " <- {} from [{}]",
                    self.partitioning[e.0].name(),
                    self.vertex_of[edge.source.0]
                ));
            }
            s.push('\n');
        }
        s
    }
}

/// Flink's pointwise connection (`EdgeManagerBuildUtil.connectPointwise`): the downstream
/// subtasks upstream subtask `index` feeds, when `up` subtasks feed `down` subtasks.
pub fn pointwise_targets(up: usize, down: usize, index: usize) -> Range<usize> {
    if up == 0 || down == 0 {
        return 0..0;
    }
    if up >= down {
        // Several upstream subtasks share one downstream subtask.
        let target = (0..down)
            .find(|&t| (t * up / down..(t + 1) * up / down).contains(&index))
            .unwrap_or(down - 1);
        target..target + 1
    } else {
        let start = (index * down).div_ceil(up);
        let end = ((index + 1) * down).div_ceil(up);
        start..end
    }
}

/// Validates `graph` under `config` and resolves it into an [`ExecutionPlan`].
///
/// # Errors
///
/// A [`BuildError`] naming the first problem found: an invalid setting, an empty pipeline, a
/// parallelism of 0, a max parallelism out of range or below the parallelism, a source run
/// above its parallelism limit, a duplicate uid, an operator with no path to a sink, or a
/// forward edge between different parallelisms.
pub fn plan(graph: &StreamGraph, config: &JobConfig) -> Result<ExecutionPlan, BuildError> {
    config.validate()?;
    if graph.nodes.is_empty() {
        return Err(BuildError::EmptyPipeline);
    }
    let (parallelism, max_parallelism) = resolve_parallelisms(graph, config)?;
    let edges = Adjacency::of(graph)?;
    check_every_node_reaches_a_sink(graph, &edges)?;
    let partitioning = resolve_partitionings(graph, &parallelism)?;
    let chained = decide_chaining(graph, config, &partitioning, &edges);
    let order = topological_order(graph, &edges)?;
    let (vertices, vertex_of) = build_vertices(graph, &order, &chained, &parallelism, &edges);
    Ok(ExecutionPlan {
        parallelism,
        max_parallelism,
        partitioning,
        chained,
        vertices,
        vertex_of,
    })
}

/// Each node's parallelism and max parallelism, checked: not 0, in range, a source within
/// its limit (and bounded in BATCH mode), uids unique.
fn resolve_parallelisms(
    graph: &StreamGraph,
    config: &JobConfig,
) -> Result<(Vec<u32>, Vec<u32>), BuildError> {
    let n = graph.nodes.len();
    let mut parallelism = Vec::with_capacity(n);
    let mut max_parallelism = Vec::with_capacity(n);
    let mut uids: HashMap<&str, NodeId> = HashMap::new();
    for node in &graph.nodes {
        let p = node.parallelism.unwrap_or(config.default_parallelism);
        if p == 0 {
            return Err(BuildError::InvalidParallelism {
                operator: node.label(),
                value: 0,
            });
        }
        check_source(node, p, config)?;
        if node.non_parallel && p != 1 {
            return Err(BuildError::NonParallelOperator {
                operator: node.label(),
                parallelism: p,
            });
        }
        let mp = node
            .max_parallelism
            .or(config.max_parallelism)
            .unwrap_or_else(|| default_max_parallelism(p));
        if !(1..=UPPER_BOUND_MAX_PARALLELISM).contains(&mp) {
            return Err(BuildError::InvalidMaxParallelism {
                operator: node.label(),
                value: mp,
            });
        }
        if mp < p {
            return Err(BuildError::MaxParallelismBelowParallelism {
                operator: node.label(),
                parallelism: p,
                max_parallelism: mp,
            });
        }
        if let Some(uid) = &node.uid
            && let Some(first) = uids.insert(uid, node.id)
        {
            return Err(BuildError::DuplicateUid {
                uid: uid.to_string(),
                first: graph.nodes[first.0].label(),
                second: node.label(),
            });
        }
        parallelism.push(p);
        max_parallelism.push(mp);
    }
    Ok((parallelism, max_parallelism))
}

/// A source node at parallelism `p`: bounded in BATCH mode, and within its own limit.
fn check_source(node: &StreamNode, p: u32, config: &JobConfig) -> Result<(), BuildError> {
    let NodeKind::Source(f) = &node.kind else {
        return Ok(());
    };
    if config.runtime_mode == RuntimeMode::Batch && !f.is_bounded() {
        return Err(BuildError::UnboundedSourceInBatchMode {
            operator: node.label(),
        });
    }
    if let Some(max) = f.max_parallelism()
        && p > max
    {
        return Err(BuildError::SourceParallelism {
            operator: node.label(),
            parallelism: p,
            max,
        });
    }
    Ok(())
}

/// Each node's input and output edges.
struct Adjacency {
    inputs: Vec<Vec<EdgeId>>,
    outputs: Vec<Vec<EdgeId>>,
}

impl Adjacency {
    fn of(graph: &StreamGraph) -> Result<Self, BuildError> {
        let n = graph.nodes.len();
        let mut inputs: Vec<Vec<EdgeId>> = vec![Vec::new(); n];
        let mut outputs: Vec<Vec<EdgeId>> = vec![Vec::new(); n];
        for e in &graph.edges {
            if e.source.0 >= n || e.target.0 >= n {
                return Err(BuildError::InvalidConfig(format!(
                    "edge {} refers to a node that does not exist",
                    e.id.0
                )));
            }
            if graph.nodes[e.source.0].is_sink() && e.output_tag.is_none() {
                return Err(BuildError::InvalidConfig(format!(
                    "{} is a sink: only its side outputs (get_side_output) can feed other \
                     operators",
                    graph.nodes[e.source.0].label()
                )));
            }
            outputs[e.source.0].push(e.id);
            inputs[e.target.0].push(e.id);
        }
        Ok(Adjacency { inputs, outputs })
    }
}

/// Every node must reach a sink (an operator whose output goes nowhere is a mistake).
fn check_every_node_reaches_a_sink(
    graph: &StreamGraph,
    edges: &Adjacency,
) -> Result<(), BuildError> {
    let mut reaches_sink = vec![false; graph.nodes.len()];
    let mut queue: VecDeque<usize> = graph
        .nodes
        .iter()
        .filter(|nd| nd.is_sink())
        .map(|nd| nd.id.0)
        .collect();
    for &s in &queue {
        reaches_sink[s] = true;
    }
    while let Some(v) = queue.pop_front() {
        for e in &edges.inputs[v] {
            let u = graph.edges[e.0].source.0;
            if !reaches_sink[u] {
                reaches_sink[u] = true;
                queue.push_back(u);
            }
        }
    }
    match graph.nodes.iter().find(|nd| !reaches_sink[nd.id.0]) {
        Some(node) => Err(BuildError::NoPathToSink {
            operator: node.label(),
        }),
        None => Ok(()),
    }
}

/// Each edge's partitioning: the one set, else forward between equal parallelisms and
/// rebalance between different ones. A forward edge between different parallelisms is an
/// error.
fn resolve_partitionings(
    graph: &StreamGraph,
    parallelism: &[u32],
) -> Result<Vec<Partitioning>, BuildError> {
    graph
        .edges
        .iter()
        .map(|e| {
            let (up, down) = (parallelism[e.source.0], parallelism[e.target.0]);
            match e.partitioning {
                Some(Partitioning::Forward) if up != down => {
                    Err(BuildError::ForwardParallelismMismatch {
                        from: graph.nodes[e.source.0].label(),
                        from_parallelism: up,
                        to: graph.nodes[e.target.0].label(),
                        to_parallelism: down,
                    })
                }
                Some(p) => Ok(p),
                None if up == down => Ok(Partitioning::Forward),
                None => Ok(Partitioning::Rebalance),
            }
        })
        .collect()
}

/// Whether each edge is chained (its two operators fused into one subtask), as Flink decides:
/// chaining enabled, a forward edge (so equal parallelism), the target's only input, the
/// target chaining `Always` and not a source, the source not `Never` and not a sink.
fn decide_chaining(
    graph: &StreamGraph,
    config: &JobConfig,
    partitioning: &[Partitioning],
    edges: &Adjacency,
) -> Vec<bool> {
    graph
        .edges
        .iter()
        .zip(partitioning)
        .map(|(e, p)| {
            let (src, dst) = (&graph.nodes[e.source.0], &graph.nodes[e.target.0]);
            config.chaining
                && *p == Partitioning::Forward
                && edges.inputs[e.target.0].len() == 1
                && dst.chaining == ChainingStrategy::Always
                && src.chaining != ChainingStrategy::Never
                && !dst.is_source()
                // A sink's side output leaves through the network: its records come from
                // the sink's asynchronous writes, not from a call a successor could chain to.
                && !src.is_sink()
        })
        .collect()
}

/// The nodes in topological order (Kahn); the API adds nodes after their inputs, but this
/// does not rely on it. A cycle is an error.
fn topological_order(graph: &StreamGraph, edges: &Adjacency) -> Result<Vec<usize>, BuildError> {
    let n = graph.nodes.len();
    let mut indegree: Vec<usize> = edges.inputs.iter().map(Vec::len).collect();
    let mut order = Vec::with_capacity(n);
    let mut ready: VecDeque<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    while let Some(v) = ready.pop_front() {
        order.push(v);
        for e in &edges.outputs[v] {
            let t = graph.edges[e.0].target.0;
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push_back(t);
            }
        }
    }
    if order.len() != n {
        return Err(BuildError::InvalidConfig(
            "the stream graph has a cycle (iterations are not supported)".into(),
        ));
    }
    Ok(order)
}

/// The job vertices: a node joins its predecessor's vertex through its chained input edge;
/// each vertex lists its nodes breadth-first from its head and is named after them.
fn build_vertices(
    graph: &StreamGraph,
    order: &[usize],
    chained: &[bool],
    parallelism: &[u32],
    edges: &Adjacency,
) -> (Vec<JobVertex>, Vec<VertexId>) {
    let mut vertex_of: Vec<Option<VertexId>> = vec![None; graph.nodes.len()];
    let mut vertices: Vec<JobVertex> = Vec::new();
    for &v in order {
        let chained_in = edges.inputs[v].iter().find(|e| chained[e.0]);
        let vid = match chained_in.and_then(|e| vertex_of[graph.edges[e.0].source.0]) {
            Some(vid) => vid,
            None => {
                let vid = VertexId(vertices.len());
                vertices.push(JobVertex {
                    id: vid,
                    head: NodeId(v),
                    nodes: Vec::new(),
                    parallelism: parallelism[v],
                    name: String::new(),
                    inputs: edges.inputs[v].clone(),
                });
                vid
            }
        };
        vertex_of[v] = Some(vid);
    }
    let vertex_of: Vec<VertexId> = vertex_of
        .into_iter()
        .map(|v| v.unwrap_or(VertexId(0)))
        .collect();
    for vertex in &mut vertices {
        let mut queue = VecDeque::from([vertex.head.0]);
        while let Some(v) = queue.pop_front() {
            vertex.nodes.push(NodeId(v));
            for e in &edges.outputs[v] {
                if chained[e.0] {
                    queue.push_back(graph.edges[e.0].target.0);
                }
            }
        }
        vertex.name = vertex_name(graph, &vertex.nodes);
    }
    (vertices, vertex_of)
}

/// A vertex's name: its nodes' names joined by arrows, sources and sinks marked.
fn vertex_name(graph: &StreamGraph, nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes
        .iter()
        .map(|id| {
            let node = &graph.nodes[id.0];
            match node.kind {
                NodeKind::Source(_) => format!("Source: {}", node.name),
                NodeKind::Sink(_) => format!("Sink: {}", node.name),
                NodeKind::Operator(_) => node.name.to_string(),
            }
        })
        .collect();
    names.join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::partition::TypedWriterFactory;
    use crate::error::UserError;
    use crate::operators::operator::TaskInfo;
    use crate::operators::sink::{ErasedSink, SinkFactory};
    use crate::operators::source::{ErasedSource, SourceFactory};
    use std::sync::Arc;

    struct NoSource(Option<u32>);
    impl SourceFactory for NoSource {
        fn create(&self, _: &TaskInfo) -> Result<Box<dyn ErasedSource>, String> {
            Err("test".into())
        }
        fn max_parallelism(&self) -> Option<u32> {
            self.0
        }
    }
    struct NoSink;
    impl SinkFactory for NoSink {
        fn create(&self, _: &TaskInfo) -> Result<Box<dyn ErasedSink>, String> {
            Err("test".into())
        }
    }
    struct Nop;
    impl crate::operators::operator::Operator for Nop {
        type In = u64;
        type Out = u64;
        fn process_batch(
            &mut self,
            b: crate::dataplane::data::Batch<u64>,
            out: &mut crate::dataplane::data::Collector<u64>,
        ) -> Result<(), UserError> {
            out.collect_batch(b);
            Ok(())
        }
    }

    struct G(StreamGraph);
    impl G {
        fn new() -> Self {
            G(StreamGraph::default())
        }
        fn source(&mut self, p: u32) -> NodeId {
            let id = self
                .0
                .add_node("src", NodeKind::Source(Arc::new(NoSource(None))), None);
            self.0.nodes[id.0].parallelism = Some(p);
            id
        }
        fn op(&mut self, name: &str, p: u32, inputs: &[(NodeId, Option<Partitioning>)]) -> NodeId {
            let f: Arc<dyn crate::operators::operator::OperatorFactory> =
                Arc::new(|_: &TaskInfo| crate::operators::operator::erase(Nop));
            let id = self.0.add_node(name, NodeKind::Operator(f), None);
            self.0.nodes[id.0].parallelism = Some(p);
            self.wire(id, inputs);
            id
        }
        fn sink(&mut self, p: u32, inputs: &[(NodeId, Option<Partitioning>)]) -> NodeId {
            let id = self
                .0
                .add_node("out", NodeKind::Sink(Arc::new(NoSink)), None);
            self.0.nodes[id.0].parallelism = Some(p);
            self.wire(id, inputs);
            id
        }
        fn wire(&mut self, id: NodeId, inputs: &[(NodeId, Option<Partitioning>)]) {
            for (src, part) in inputs {
                self.0.add_edge(
                    *src,
                    id,
                    0,
                    *part,
                    Arc::new(TypedWriterFactory::<u64, _>::basic()),
                );
            }
        }
        fn plan(&self) -> Result<ExecutionPlan, BuildError> {
            plan(&self.0, &JobConfig::default())
        }
    }

    #[test]
    fn regions_are_the_connected_components_of_the_job_graph() {
        let mut g = G::new();
        // Region 0: two sources unioned into a keyed operator (three vertices).
        let a = g.source(1);
        let b = g.source(2);
        let k = g.op(
            "Keyed",
            2,
            &[(a, Some(Partitioning::Hash)), (b, Some(Partitioning::Hash))],
        );
        g.sink(2, &[(k, None)]);
        // Region 1: a separate pipeline with a rebalance (two vertices).
        let c = g.source(1);
        let m = g.op("Map", 2, &[(c, Some(Partitioning::Rebalance))]);
        g.sink(2, &[(m, None)]);
        let p = g.plan().unwrap();
        let regions = p.regions(&g.0);
        let of = |node: NodeId| regions[p.vertex_of[node.0].0];
        assert_eq!((of(a), of(b), of(k)), (0, 0, 0));
        assert_eq!((of(c), of(m)), (1, 1));
        assert_eq!(regions.iter().max(), Some(&1));
    }

    #[test]
    fn a_sinks_side_output_is_never_chained_and_its_main_output_does_not_exist() {
        let mut g = G::new();
        let s = g.source(2);
        let sink = g.sink(2, &[(s, None)]);
        let m = g.op("Rejected", 2, &[]);
        let e = g.0.add_edge(
            sink,
            m,
            0,
            None,
            Arc::new(TypedWriterFactory::<u64, _>::basic()),
        );
        g.sink(2, &[(m, None)]);
        // Without a tag the edge would be the sink's main output, which a sink has not.
        let err = g.plan().unwrap_err().to_string();
        assert!(err.contains("only its side outputs"), "{err}");
        g.0.edges[e.0].output_tag = Some("rejected".into());
        let p = g.plan().unwrap();
        assert!(
            !p.chained[e.0],
            "forward, equal parallelism, and still not chained"
        );
        let names: Vec<&str> = p.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["Source: src -> Sink: out", "Rejected -> Sink: out"]
        );
    }

    #[test]
    fn forward_equal_parallelism_chains_into_one_vertex() {
        let mut g = G::new();
        let s = g.source(2);
        let m = g.op("Map", 2, &[(s, None)]);
        let f = g.op("Filter", 2, &[(m, None)]);
        g.sink(2, &[(f, None)]);
        let p = g.plan().unwrap();
        assert_eq!(p.vertices.len(), 1);
        assert_eq!(
            p.vertices[0].name,
            "Source: src -> Map -> Filter -> Sink: out"
        );
        assert!(p.chained.iter().all(|c| *c));
    }

    #[test]
    fn parallelism_change_hash_and_union_break_chains() {
        let mut g = G::new();
        let s = g.source(1);
        let m = g.op("Map", 2, &[(s, None)]);
        let k = g.op("Reduce", 2, &[(m, Some(Partitioning::Hash))]);
        let s2 = g.source(2);
        let u = g.op("AfterUnion", 2, &[(k, None), (s2, None)]);
        g.sink(2, &[(u, None)]);
        let p = g.plan().unwrap();
        assert_eq!(p.partitioning[0], Partitioning::Rebalance);
        assert_eq!(p.chained, vec![false, false, false, false, true]);
        let names: Vec<_> = p.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "Source: src",
                "Source: src",
                "Map",
                "Reduce",
                "AfterUnion -> Sink: out"
            ]
        );
    }

    #[test]
    fn chaining_strategies_and_global_switch() {
        let mut g = G::new();
        let s = g.source(1);
        let a = g.op("A", 1, &[(s, None)]);
        let b = g.op("B", 1, &[(a, None)]);
        let c = g.op("C", 1, &[(b, None)]);
        g.sink(1, &[(c, None)]);
        g.0.nodes[b.0].chaining = ChainingStrategy::Head;
        g.0.nodes[c.0].chaining = ChainingStrategy::Never;
        let p = g.plan().unwrap();
        let names: Vec<_> = p.vertices.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, vec!["Source: src -> A", "B", "C", "Sink: out"]);

        let cfg = JobConfig {
            chaining: false,
            ..JobConfig::default()
        };
        assert_eq!(plan(&g.0, &cfg).unwrap().vertices.len(), 5);
    }

    #[test]
    fn fan_out_chains_a_tree() {
        let mut g = G::new();
        let s = g.source(1);
        let a = g.op("A", 1, &[(s, None)]);
        let b = g.op("B", 1, &[(s, None)]);
        g.sink(1, &[(a, None)]);
        g.sink(1, &[(b, None)]);
        let p = g.plan().unwrap();
        assert_eq!(p.vertices.len(), 1);
        assert_eq!(p.vertices[0].nodes.len(), 5);
    }

    #[test]
    fn invalid_graphs_name_the_problem() {
        let mut g = G::new();
        let s = g.source(2);
        let m = g.op("Dangling", 2, &[(s, None)]);
        g.sink(2, &[(s, None)]);
        let err = g.plan().unwrap_err().to_string();
        assert!(
            err.contains("'Dangling'") && err.contains("no path to a sink"),
            "{err}"
        );
        let _ = m;

        let mut g = G::new();
        let s = g.source(1);
        let m = g.op("Wide", 0, &[(s, None)]);
        g.sink(1, &[(m, None)]);
        assert!(matches!(
            g.plan(),
            Err(BuildError::InvalidParallelism { value: 0, .. })
        ));

        let mut g = G::new();
        let s = g.source(1);
        let m = g.op("M", 3, &[(s, Some(Partitioning::Forward))]);
        g.sink(3, &[(m, None)]);
        assert!(matches!(
            g.plan(),
            Err(BuildError::ForwardParallelismMismatch { .. })
        ));

        let mut g = G::new();
        let s = g.source(1);
        let m = g.op("M", 8, &[(s, None)]);
        g.0.nodes[m.0].max_parallelism = Some(4);
        g.sink(1, &[(m, None)]);
        let err = g.plan().unwrap_err();
        assert!(
            matches!(err, BuildError::MaxParallelismBelowParallelism { .. }),
            "{err}"
        );

        let mut g = G::new();
        let id =
            g.0.add_node("coll", NodeKind::Source(Arc::new(NoSource(Some(1)))), None);
        g.0.nodes[id.0].parallelism = Some(2);
        g.sink(2, &[(id, None)]);
        assert!(matches!(
            g.plan(),
            Err(BuildError::SourceParallelism { max: 1, .. })
        ));

        let mut g = G::new();
        let s = g.source(1);
        let a = g.op("A", 1, &[(s, None)]);
        g.sink(1, &[(a, None)]);
        g.0.nodes[s.0].uid = Some("x".into());
        g.0.nodes[a.0].uid = Some("x".into());
        assert!(matches!(g.plan(), Err(BuildError::DuplicateUid { .. })));

        assert!(matches!(G::new().plan(), Err(BuildError::EmptyPipeline)));
    }

    #[test]
    fn pointwise_matches_flink() {
        // 2 -> 4: each upstream feeds two downstream subtasks.
        assert_eq!(pointwise_targets(2, 4, 0), 0..2);
        assert_eq!(pointwise_targets(2, 4, 1), 2..4);
        // 6 -> 2: three upstream subtasks share one downstream subtask.
        let t: Vec<_> = (0..6).map(|i| pointwise_targets(6, 2, i).start).collect();
        assert_eq!(t, vec![0, 0, 0, 1, 1, 1]);
        // 3 -> 5: every downstream subtask has exactly one upstream.
        let mut hit = [0; 5];
        for i in 0..3 {
            for d in pointwise_targets(3, 5, i) {
                hit[d] += 1;
            }
        }
        assert_eq!(hit, [1; 5]);
        assert_eq!(pointwise_targets(4, 4, 3), 3..4);
    }
}
