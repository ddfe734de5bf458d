//! Errors: loading a plugin, the runtime's own failures, and how a call failed.

use serde::{Deserialize, Serialize};

/// Why a component could not be loaded. `Display` is a sentence for the plugin's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The component is bigger than the size limit.
    #[error("the component is {bytes} bytes, more than the {max} bytes allowed")]
    TooLarge {
        /// The component's size, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The bytes are not a WebAssembly component (a core module, or not WebAssembly at all).
    #[error(
        "the file is not a WebAssembly component (a core module must be turned into a component, \
         e.g. by building for wasm32-wasip2)"
    )]
    NotAComponent,
    /// The component does not implement exactly one supported world at a supported version,
    /// or imports something the host does not provide. The string says what is wrong.
    #[error("the component is not a supported plugin: {0}")]
    UnsupportedWorld(String),
    /// The component is malformed or failed to compile.
    #[error("the component failed to compile: {0}")]
    Compile(String),
    /// Reading or writing the compiled cache failed in a way the runtime could not work
    /// around. (`load` currently falls back to compiling when the cache fails, so it does not
    /// return this today.)
    #[error("the compiled-component cache failed: {0}")]
    Io(String),
}

/// A failure of the runtime itself, not of a plugin: the host's fault or its environment's.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine could not be configured.
    #[error("the WebAssembly engine could not be created: {0}")]
    Engine(String),
    /// The cache directory could not be created.
    #[error("the compiled-component cache directory {path} could not be created: {message}")]
    CacheDir {
        /// The directory.
        path: String,
        /// The I/O error.
        message: String,
    },
}

/// How a call failed. [`CallFailure::kind`] is a stable short name for metrics and APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CallFailure {
    /// The plugin returned its WIT `error`.
    #[error("the plugin declined: {code}: {message}")]
    Guest {
        /// The plugin's machine-readable code, e.g. "bad-config".
        code: String,
        /// The plugin's sentence for the operator.
        message: String,
    },
    /// The plugin trapped (panicked, hit `unreachable`, divided by zero, …).
    #[error("the plugin crashed: {0}")]
    Trap(String),
    /// The plugin used up its fuel.
    #[error("the plugin ran out of fuel")]
    Fuel,
    /// The plugin ran past its deadline.
    #[error("the plugin ran past its deadline")]
    Deadline,
    /// The plugin tried to use more memory than it may.
    #[error("the plugin tried to use more memory than it may")]
    Memory,
    /// The call's arguments were too big to send (nothing ran).
    #[error("the call's input is {bytes} bytes, more than the {max} bytes allowed")]
    Input {
        /// Estimated encoded size of the arguments, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The plugin's result was too big to accept (it was discarded).
    #[error("the plugin's output is {bytes} bytes, more than the {max} bytes allowed")]
    Output {
        /// Estimated encoded size of the result, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The function called is not in the plugin's world (nothing ran).
    #[error("the plugin does not implement this world")]
    WrongWorld,
}

impl CallFailure {
    /// A short stable name: "guest", "trap", "fuel", "deadline", "memory", "input", "output"
    /// or "wrong-world".
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Guest { .. } => "guest",
            CallFailure::Trap(_) => "trap",
            CallFailure::Fuel => "fuel",
            CallFailure::Deadline => "deadline",
            CallFailure::Memory => "memory",
            CallFailure::Input { .. } => "input",
            CallFailure::Output { .. } => "output",
            CallFailure::WrongWorld => "wrong-world",
        }
    }
}
