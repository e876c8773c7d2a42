"""SpecDec++ (docs/algorithms.md §3): the acceptance-prediction head (`head`), its training
data (`data`), training and calibration (`train`), and `specdec train-head` (`cli`)."""
