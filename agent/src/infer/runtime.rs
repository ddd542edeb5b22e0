//! The ONNX Runtime environment, loaded once per process from the pinned
//! library that `scripts/setup` installs (ort's own binary download cannot
//! work on a gateway without internet, and a pinned library keeps results
//! identical between the x86 and ARM builds).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Outlet, TensorElementType};

pub const ORT_VERSION: &str = "1.32.0";
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.32.0";
/// Where `scripts/setup` puts the library, relative to the repository.
pub const ORT_REPO_DIR: &str = ".deps/onnxruntime";
/// Where the Debian package puts it.
pub const ORT_SYSTEM_DIR: &str = "/usr/lib/matthan";

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The library: `ORT_DYLIB_PATH` if set, else beside the executable, else
/// in a `.deps/onnxruntime` folder above it (a repository checkout), else
/// the system location.
pub fn find_library() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(anyhow!(
                "ORT_DYLIB_PATH is {} but no file is there",
                p.display()
            ))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            candidates.push(dir.join(ORT_LIBRARY));
            candidates.push(dir.join(ORT_REPO_DIR).join(ORT_LIBRARY));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join(ORT_REPO_DIR).join(ORT_LIBRARY));
    }
    candidates.push(Path::new(ORT_SYSTEM_DIR).join(ORT_LIBRARY));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "ONNX Runtime {ORT_VERSION} ({ORT_LIBRARY}) was not found beside the executable, in {ORT_REPO_DIR} or in {ORT_SYSTEM_DIR}; \
             run scripts/setup, or set ORT_DYLIB_PATH to the library's path"
        )
    })
}

pub fn environment() -> anyhow::Result<&'static Environment> {
    ENVIRONMENT
        .get_or_init(|| {
            let lib = find_library().map_err(|e| format!("{e:#}"))?;
            ort::init_from(&lib)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?
                .with_name("matthan")
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

/// A model file on disk, identified by name and content hash so that every
/// event (and later every evidence package) says exactly which weights
/// produced it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelId {
    pub role: &'static str,
    pub name: String,
    pub sha256: String,
}

/// The shape of the tensor at `outlet` (the model's input or output
/// named by `what`), when its elements are `ty`. The model families check
/// their models with it when loaded, so that a wrong file named in the
/// configuration stops the start with its name instead of failing every
/// frame of every camera.
pub fn tensor_shape(
    outlet: Option<&Outlet>,
    what: &str,
    ty: TensorElementType,
) -> anyhow::Result<Vec<i64>> {
    let outlet = outlet.ok_or_else(|| anyhow!("it has no {what}"))?;
    match (outlet.dtype().tensor_type(), outlet.dtype().tensor_shape()) {
        (Some(t), Some(shape)) if t == ty => Ok(shape.to_vec()),
        _ => Err(anyhow!(
            "its {what} `{}` is {}, not a tensor of {ty}",
            outlet.name(),
            outlet.dtype()
        )),
    }
}

/// [`tensor_shape`] of a model's first input or output (`what`), the
/// error saying what a model of its family (`layout`) takes and gives.
pub fn first_tensor(
    outlets: &[Outlet],
    what: &str,
    ty: TensorElementType,
    layout: &str,
) -> anyhow::Result<Vec<i64>> {
    tensor_shape(outlets.first(), what, ty).context(layout.to_string())
}

pub fn load_session(
    role: &'static str,
    path: &Path,
    threads: usize,
) -> anyhow::Result<(Session, ModelId)> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the {role} model {}; run scripts/setup to fetch the models, or set models.dir",
            path.display()
        )
    })?;
    let sha256 = crate::digest::sha256_hex(&bytes);
    let session = Session::builder(environment()?)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .and_then(|mut b| b.commit_from_memory(&bytes))
        .map_err(|e| {
            anyhow!(
                "the {role} model {} (sha256 {sha256}) is not a usable ONNX model: {e}; \
                 run scripts/setup to fetch it again",
                path.display()
            )
        })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((session, ModelId { role, name, sha256 }))
}

/// The shared session, for one run. A panic in one camera's analysis
/// while it held the lock (in our own pre- or post-processing) leaves the
/// session sound: the other cameras go on with it rather than failing
/// every frame from then on.
pub fn lock(session: &std::sync::Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
