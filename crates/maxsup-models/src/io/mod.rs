//! Weight I/O under PyTorch state-dict names: safetensors save/load and PyTorch `.pth` import.

mod pth;
mod safetensors_io;
mod state_dict;

pub use pth::{load_pth, read_pth_state_dict};
pub use safetensors_io::{load_safetensors, save_safetensors};
pub use state_dict::{check_weight_values, load_state_dict, state_dict, StateDictMismatch};
