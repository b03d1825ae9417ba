"""A faithful, deterministic, time-scalable fake of Together AI's asynchronous video API."""

from genqueue.simulator.app import create_app
from genqueue.simulator.config import DEFAULT_MODELS, FaultPolicy, ModelProfile, SimConfig
from genqueue.simulator.faults import PROFILES as FAULT_PROFILES
from genqueue.simulator.faults import FaultProfile
from genqueue.simulator.faults import parse as parse_faults
from genqueue.simulator.lifecycle import SimJob, Simulator
from genqueue.simulator.server import (
    SimServer,
    run_in_thread,
    running_simulator,
    serve,
    start_in_thread,
)

__all__ = [
    "DEFAULT_MODELS",
    "FAULT_PROFILES",
    "FaultPolicy",
    "FaultProfile",
    "ModelProfile",
    "SimConfig",
    "SimJob",
    "SimServer",
    "Simulator",
    "create_app",
    "parse_faults",
    "run_in_thread",
    "running_simulator",
    "serve",
    "start_in_thread",
]
