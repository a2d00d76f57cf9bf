//! The stream graph: operators and the edges between them, as the API builds them. Plain data
//! plus factories; [`plan`](crate::runtime::plan::plan) turns it into job vertices and subtasks.

use crate::dataplane::partition::{Partitioning, WriterFactory};
use crate::error::OperatorLabel;
use crate::operators::operator::OperatorFactory;
use crate::operators::sink::SinkFactory;
use crate::operators::source::SourceFactory;
use crate::types::{EdgeId, NodeId};
use std::fmt;
use std::panic::Location;
use std::sync::Arc;

/// What a node does.
#[derive(Clone)]
pub enum NodeKind {
    /// Produces records.
    Source(Arc<dyn SourceFactory>),
    /// Transforms records.
    Operator(Arc<dyn OperatorFactory>),
    /// Consumes records.
    Sink(Arc<dyn SinkFactory>),
}

impl fmt::Debug for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeKind::Source(_) => "Source",
            NodeKind::Operator(_) => "Operator",
            NodeKind::Sink(_) => "Sink",
        })
    }
}

/// Whether a node may share a subtask with its neighbours (Flink's `ChainingStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChainingStrategy {
    /// Chain with the predecessor and successors when possible.
    #[default]
    Always,
    /// Start a new chain here (`start_new_chain()`): never chain to the predecessor, but
    /// successors may chain to this node.
    Head,
    /// Never chain (`disable_chaining()`), in either direction.
    Never,
}

/// One operator of the stream graph.
#[derive(Debug, Clone)]
pub struct StreamNode {
    /// Its id: its index in [`StreamGraph::nodes`].
    pub id: NodeId,
    /// Its name.
    pub name: Arc<str>,
    /// Its stable id across job versions, if set.
    pub uid: Option<Arc<str>>,
    /// Where in the user's code it was added.
    pub location: Option<&'static Location<'static>>,
    /// Its parallelism; `None` uses the job default.
    pub parallelism: Option<u32>,
    /// Its max parallelism; `None` uses the job setting or Flink's derivation.
    pub max_parallelism: Option<u32>,
    /// Its chaining strategy.
    pub chaining: ChainingStrategy,
    /// A non-parallel operator (`window_all`): it must run at parallelism 1.
    pub non_parallel: bool,
    /// What it does.
    pub kind: NodeKind,
}

impl StreamNode {
    /// The label used in messages.
    pub fn label(&self) -> OperatorLabel {
        OperatorLabel {
            id: self.id,
            name: self.name.clone(),
            location: self.location,
        }
    }

    /// True for a sink.
    pub fn is_sink(&self) -> bool {
        matches!(self.kind, NodeKind::Sink(_))
    }

    /// True for a source.
    pub fn is_source(&self) -> bool {
        matches!(self.kind, NodeKind::Source(_))
    }
}

/// A connection from one node's output to one input of another.
#[derive(Clone)]
pub struct StreamEdge {
    /// Its id: its index in [`StreamGraph::edges`].
    pub id: EdgeId,
    /// Upstream node.
    pub source: NodeId,
    /// Downstream node.
    pub target: NodeId,
    /// Which logical input of the target it feeds (0 for one-input operators; a union feeds
    /// several edges into the same input).
    pub input: usize,
    /// The partitioning; `None` means Flink's default: forward if the parallelisms are
    /// equal, rebalance otherwise.
    pub partitioning: Option<Partitioning>,
    /// Creates the typed writers of this edge.
    pub writer: Arc<dyn WriterFactory>,
    /// The side output this edge carries (Flink's `OutputTag` id); `None` for the main output.
    pub output_tag: Option<Arc<str>>,
}

impl fmt::Debug for StreamEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamEdge")
            .field("id", &self.id)
            .field("source", &self.source)
            .field("target", &self.target)
            .field("input", &self.input)
            .field("partitioning", &self.partitioning)
            .field("output_tag", &self.output_tag)
            .finish()
    }
}

/// Operators and edges, in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct StreamGraph {
    /// The nodes; `nodes[i].id == NodeId(i)`.
    pub nodes: Vec<StreamNode>,
    /// The edges; `edges[i].id == EdgeId(i)`.
    pub edges: Vec<StreamEdge>,
}

impl StreamGraph {
    /// Adds a node, assigning its id.
    pub fn add_node(
        &mut self,
        name: impl Into<Arc<str>>,
        kind: NodeKind,
        location: Option<&'static Location<'static>>,
    ) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(StreamNode {
            id,
            name: name.into(),
            uid: None,
            location,
            parallelism: None,
            max_parallelism: None,
            chaining: ChainingStrategy::Always,
            non_parallel: false,
            kind,
        });
        id
    }

    /// Adds an edge, assigning its id.
    pub fn add_edge(
        &mut self,
        source: NodeId,
        target: NodeId,
        input: usize,
        partitioning: Option<Partitioning>,
        writer: Arc<dyn WriterFactory>,
    ) -> EdgeId {
        let id = EdgeId(self.edges.len());
        self.edges.push(StreamEdge {
            id,
            source,
            target,
            input,
            partitioning,
            writer,
            output_tag: None,
        });
        id
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&StreamNode> {
        self.nodes.get(id.0)
    }

    /// The node with this id, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut StreamNode> {
        self.nodes.get_mut(id.0)
    }
}
