//! Signal processing around the model: windows, STFT/iSTFT, resampling.

pub mod resample;
pub mod stft;
#[cfg(test)]
mod tests;
pub mod window;
