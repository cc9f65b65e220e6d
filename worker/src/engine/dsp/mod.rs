//! Signal processing around the model: windows, STFT/iSTFT, resampling.

pub mod resample;
pub mod stft;
pub mod window;
