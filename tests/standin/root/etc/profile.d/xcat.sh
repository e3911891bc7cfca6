# xCAT TEST STAND-IN (NOT xCAT): environment like real xCAT's /etc/profile.d/xcat.sh
XCATROOT=/opt/xcat
case ":$PATH:" in
  *":$XCATROOT/sbin:"*) ;;
  *) PATH=$XCATROOT/bin:$XCATROOT/sbin:$XCATROOT/share/xcat/tools:$PATH ;;
esac
MANPATH=$XCATROOT/share/man:$MANPATH
export XCATROOT PATH MANPATH
